"""The receiving end of a fast-path test: reads a socket until EOF, in a thread."""

import socket
import threading


class Reader:
    """Reads ``sock`` until EOF in a thread; ``result()`` joins and returns the bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while chunk := self._sock.recv(1 << 16):
            self._chunks.append(chunk)

    def result(self) -> bytes:
        self._thread.join()
        return b"".join(self._chunks)
