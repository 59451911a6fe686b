"""The serving hot loop: client connections, and the zero-copy data path by which object
bytes go from a disk's file to the viewer's socket inside the kernel (sendfile) and never
enter Python.

``Connection`` is one client connection of a worker: it reads and parses requests,
answers them through the worker's handler and sends them; ``send_response`` sends one
HTTP response (head, then a byte range of a file) and is the serving path's one call per
request and per writability event; ``send_file`` is the bare sendfile loop. All three are
compiled Cython modules when the extensions are built, otherwise their pure-Python twins
with the same interface and semantics; the compiled connection calls the compiled sender
at C level, so the two are chosen together. Setting ``OCA_NO_EXTENSIONS`` to a non-empty
value other than ``0`` selects the twins. ``IMPLEMENTATION`` says which ones are in use:
``"cython"`` or ``"python"``. docs/fastpath.md has the details.
"""

import os

NO_EXTENSIONS_ENV = "OCA_NO_EXTENSIONS"
EXTENSIONS = os.environ.get(NO_EXTENSIONS_ENV, "") in ("", "0")
"""Whether compiled modules may be used: the project's one reading of the switch
(fill's compiled loops are chosen by it too)."""

if not EXTENSIONS:
    from ._pyconnection import Connection, Entry, EntryTable, Response, Shared
    from ._pysendfile import IMPLEMENTATION, send_file, send_response
else:
    try:
        from ._connection import Connection, Entry, EntryTable, Response, Shared
        from ._sendfile import IMPLEMENTATION, send_file, send_response
    except ModuleNotFoundError:
        from ._pyconnection import Connection, Entry, EntryTable, Response, Shared
        from ._pysendfile import IMPLEMENTATION, send_file, send_response

__all__ = ["EXTENSIONS", "IMPLEMENTATION", "NO_EXTENSIONS_ENV", "Connection", "Entry",
           "EntryTable", "Response", "Shared", "send_file", "send_response"]
