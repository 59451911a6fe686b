"""The operator side of the admin listener: what `oca drain`, `oca undrain` and
`oca status` ask a running `oca serve`."""

from __future__ import annotations

import http.client
import json

from ..config import Config
from ..errors import OcaError

CONFIRM_CALL_TIMEOUT = 15.0
"""Socket timeout of POST /drain and /undrain: the server answers once every worker has
applied the change, or with an error naming those that did not after 5 s
(supervisor.CONFIRM_TIMEOUT)."""


def admin_call(config: Config, method: str, path: str, timeout: float = 5.0) -> dict:
    """Call the admin listener of the server run with *config*; its JSON answer."""
    host, port = config.server.admin_listen
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise OcaError(f"cannot reach oca serve's admin listener at {host}:{port} "
                       f"(server.admin_listen): {getattr(e, 'strerror', None) or e}") from None
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        raise OcaError(f"admin listener at {host}:{port} answered {resp.status} "
                       f"{body[:200]!r}") from None
    if resp.status >= 400 and resp.status != 503:
        raise OcaError(f"admin listener at {host}:{port}: {resp.status}: "
                       f"{data.get('error', data)}")
    return data
