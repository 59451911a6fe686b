"""HTTP/1.1 serving of stored objects: ``oca serve``.

Deciding which bytes to send (ranges.py, conditional logic, head formatting) is
kept apart from sending them (_fastpath); the connection code (protocol.py)
knows HTTP framing, not object semantics.
"""
