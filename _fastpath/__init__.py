"""The zero-copy data path: object bytes go from a disk's file to the viewer's socket
inside the kernel (sendfile) and never enter Python.

``send_response`` sends one HTTP response (head, then a byte range of a file) and is
the serving path's one call per request and per writability event; ``send_file`` is
the bare sendfile loop. Both are the compiled Cython module when the extension is
built, otherwise its pure-Python twin with the same interface and semantics. Setting
``OCA_NO_EXTENSIONS`` to a non-empty value other than ``0`` selects the twin.
``IMPLEMENTATION`` says which one is in use: ``"cython"`` or ``"python"``.
"""

import os

NO_EXTENSIONS_ENV = "OCA_NO_EXTENSIONS"

if os.environ.get(NO_EXTENSIONS_ENV, "") not in ("", "0"):
    from ._pysendfile import IMPLEMENTATION, send_file, send_response
else:
    try:
        from ._sendfile import IMPLEMENTATION, send_file, send_response
    except ModuleNotFoundError:
        from ._pysendfile import IMPLEMENTATION, send_file, send_response

__all__ = ["IMPLEMENTATION", "NO_EXTENSIONS_ENV", "send_file", "send_response"]
