"""HTTP/1.1 serving of stored objects: ``oca serve``.

Deciding which bytes to send (handler.py, with ranges.py, conditional.py and head.py)
is kept apart from sending them. The connection loop (_fastpath.Connection; protocol.py
accepts the connections) knows HTTP framing and asks the handler what to answer; only a
plain GET of an open object, the hot path, is answered there, from what the handler and
the object table rendered beforehand (Handler.plain_head, OpenObject).
"""
