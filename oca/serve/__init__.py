"""``oca serve``: the appliance daemon.

A supervisor (supervisor.py) runs *roles* as child processes: the serving workers
(worker.py, with their connections in connections.py and their view of the store in
objects.py) and the background work that must never run on a worker's event loop.
HTTP semantics (what to answer) live in ``oca.http``; this package is the process tree.
"""
