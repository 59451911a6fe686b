"""HTTP/1.1 serving of stored objects: ``oca serve``.

Deciding which bytes to send (handler.py, with ranges.py, conditional.py and head.py)
is kept apart from sending them. The handler answers with a descriptor
(``_fastpath.Response``: status, head bytes, the object's entry, body segments) that
the connection loop (``_fastpath.Connection``; oca/serve/connections.py accepts the
connections) sends, counts and logs; plain GETs, single ranges and ``/range/`` URLs of
open objects the loop answers itself, from the heads the handler rendered beforehand
(``Handler.render_heads``, ``OpenObject``).
"""
