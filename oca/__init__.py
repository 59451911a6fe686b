"""oca: software for CDN appliances that hold a video catalog on tiered storage
and serve it over HTTP/1.1 (see README.md and docs/)."""

__version__ = "0.1.0"
