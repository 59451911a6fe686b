"""Fixtures for every fast-path test: each test runs against both implementations."""

import importlib
import socket
from collections.abc import Iterator
from types import ModuleType

import pytest

# The only place outside _fastpath/__init__.py that names the private modules:
# both must be importable here, since `make test` builds the extension first.
IMPLEMENTATIONS = {"cython": "_fastpath._sendfile", "python": "_fastpath._pysendfile"}
# The connection loop of each (docs/fastpath.md); chosen together with the send loop.
CONNECTIONS = {"cython": "_fastpath._connection", "python": "_fastpath._pyconnection"}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request: pytest.FixtureRequest) -> ModuleType:
    name = IMPLEMENTATIONS[request.param]
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"{name} cannot be imported ({exc}); build it with `make install`")
    assert request.param == module.IMPLEMENTATION
    return module


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected AF_UNIX stream pair: (sender, receiver)."""
    a, b = socket.socketpair()
    with a, b:
        yield a, b


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A TCP connection over 127.0.0.1: (sender, receiver), the sender with TCP_NODELAY
    as asyncio and uvloop set it on every connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with sender, receiver:
        yield sender, receiver
