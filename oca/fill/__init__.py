"""The fill agent: the appliance's side of the nightly fill (``oca fill apply``).

It reads this appliance's manifest (``oca-fill plan`` wrote it: DESIGN.md "Fill
manifest"), compares it with the local store and makes the store hold it: fetches
what is missing from the node the manifest names (a peer, the site's backbone
appliance, the origin) over their ordinary ``/o/<id>`` URLs, verified against the
manifest's xxh3 before the atomic commit, falling back along ``upstream`` when a source
fails; moves what changed tier; deletes what is dropped as late as it can.

- ``manifest``: reading and checking a manifest (every bad field named).
- ``source``: one object's copy from one source over HTTP/1.1, and the appliance-wide
  rate limit.
- ``agent``: the diff and the run (waves, parallel transfers, fallback, deletes, the
  summary).
"""
