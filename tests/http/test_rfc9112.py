"""RFC 9112 sections 3 (request line, request target, Host) and 6 (message body framing):
one test per requirement a server MUST meet, against the real `oca serve` on both
implementations, with raw sockets (http.client would not send most of these).

Quoted requirements are from RFC 9112 unless another RFC is named.
"""

from __future__ import annotations

import select
import socket

import pytest

from tests.conftest import make_file
from tests.http.conftest import FASTPATHS, Server, start_server

SMALL = 16 << 10


@pytest.fixture(scope="module", params=FASTPATHS)
def srv(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"rfc9112-{request.param}")
    objects = {"small.m4s": (make_file(tmp / "s", SMALL, seed=2).read_bytes(), "flash")}
    server = start_server(tmp / "app", request.param, objects=objects)
    yield server
    server.stop()


class Wire:
    """A raw client connection that reads responses one by one."""

    def __init__(self, srv: Server):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head_only: bool = False) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed inside a response head: {self.buf[:200]!r}"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        fields: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields.setdefault(name.lower(), []).append(value.strip())
        length = 0 if head_only else int(fields.get("content-length", ["0"])[0])
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "closed inside a response body"
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split(" ")[1]), fields, body

    def closed(self, timeout: float = 3.0) -> bool:
        """The server closed the connection, with nothing more sent."""
        if self.buf:
            return False
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def one(srv: Server, data: bytes, head_only: bool = False) -> tuple[int, dict, bytes, bool]:
    """Send *data* on a new connection: the first response and whether the server then
    closed the connection."""
    w = Wire(srv)
    try:
        w.send(data)
        status, fields, body = w.response(head_only)
        return status, fields, body, w.closed(1.0)
    finally:
        w.close()


OBJ = b"/o/small.m4s"


# -- section 3: request line and target ----------------------------------------------

def test_3_target_longer_than_the_server_parses_is_414(srv):
    # 3: "A server that receives a request-target longer than any URI it wishes to parse
    # MUST respond with a 414 (URI Too Long) status code."
    status, _, _, _ = one(srv, b"GET /o/" + b"a" * (9 << 10) + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 414


def test_3_2_http11_request_without_host_is_400(srv):
    # 3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
    # request message that lacks a Host header field ..."
    status, _, _, closed = one(srv, b"GET " + OBJ + b" HTTP/1.1\r\n\r\n")
    assert (status, closed) == (400, True)


def test_3_2_http10_request_without_host_is_served(srv):
    # The requirement is on HTTP/1.1 requests only.
    status, _, body, _ = one(srv, b"GET " + OBJ + b" HTTP/1.0\r\n\r\n")
    assert (status, len(body)) == (200, SMALL)


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_3_2_more_than_one_host_is_400(srv, version):
    # 3.2: "... and to any request message that contains more than one Host header field
    # line ..."
    status, _, _, closed = one(srv, b"GET " + OBJ + b" HTTP/" + version
                               + b"\r\nHost: a\r\nHost: a\r\n\r\n")
    assert (status, closed) == (400, True)


@pytest.mark.parametrize("host", [b"a b", b"a/b", b"a@b", b"a:b:c", b"[::1", b"a\"b",
                                  b"a:8x"])
def test_3_2_invalid_host_is_400(srv, host):
    # 3.2: "... or a Host header field with an invalid field value." Host = uri-host
    # [ ":" port ] (RFC 3986 section 3.2.2).
    status, _, _, closed = one(srv, b"GET " + OBJ + b" HTTP/1.1\r\nHost: " + host
                               + b"\r\n\r\n")
    assert (status, closed) == (400, True)


@pytest.mark.parametrize("host", [b"", b"cdn.example", b"cdn.example:8080", b"192.0.2.1:80",
                                  b"[2001:db8::1]:8080", b"a%41b", b"x_y.example"])
def test_3_2_valid_host_is_served(srv, host):
    status, _, body, _ = one(srv, b"GET " + OBJ + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert (status, len(body)) == (200, SMALL)


@pytest.mark.parametrize("target", [b"http://cdn.example/o/small.m4s",
                                    b"HTTP://cdn.example:8080/o/small.m4s",
                                    b"https://cdn.example/o/small.m4s"])
def test_3_2_2_absolute_form_is_accepted(srv, target):
    # 3.2.2: "A server MUST accept the absolute-form in requests even though most HTTP/1.1
    # clients will only send the absolute-form to a proxy." ... "the origin server MUST
    # ignore the received Host header field (if any) and instead use the host
    # information of the request-target": a Host naming another host changes nothing.
    for host in (b"cdn.example", b"elsewhere.example"):
        status, _, body, _ = one(srv, b"GET " + target + b" HTTP/1.1\r\nHost: " + host
                                 + b"\r\n\r\n")
        assert (status, body) == (200, srv.objects["small.m4s"]), (target, host)


def test_3_2_2_absolute_form_with_a_range_and_a_range_url(srv):
    data = srv.objects["small.m4s"]
    w = Wire(srv)
    try:
        w.send(b"GET http://a/o/small.m4s HTTP/1.1\r\nHost: a\r\nRange: bytes=10-19\r\n\r\n"
               b"GET http://a/o/small.m4s/range/5-9 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert w.response()[::2] == (206, data[10:20])
        assert w.response()[::2] == (200, data[5:10])
    finally:
        w.close()


# -- section 6: message body framing --------------------------------------------------

def test_6_1_transfer_encoding_in_http10_is_faulty_framing(srv):
    # 6.1: "A server or client that receives an HTTP/1.0 message containing a
    # Transfer-Encoding header field MUST treat the message as if the framing is faulty,
    # even if a Content-Length is present, and close the connection after processing the
    # message."
    for extra in (b"", b"Content-Length: 5\r\n"):
        status, _, _, closed = one(srv, b"GET " + OBJ + b" HTTP/1.0\r\nTransfer-Encoding: "
                                   b"chunked\r\n" + extra + b"\r\n0\r\n\r\n")
        assert (status, closed) == (400, True)


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip", b"identity", b"chunked, chunked"])
def test_6_3_chunked_not_final_is_400_and_close(srv, coding):
    # 6.3 (4): "If a Transfer-Encoding header field is present in a request and the chunked
    # transfer coding is not the final encoding, the message body length cannot be
    # determined reliably; the server MUST respond with the 400 (Bad Request) status code
    # and then close the connection." (chunked twice: 6.1, "MUST NOT apply chunked more
    # than once".)
    status, _, _, closed = one(srv, b"GET " + OBJ + b" HTTP/1.1\r\nHost: a\r\n"
                               b"Transfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n")
    assert (status, closed) == (400, True)


def test_6_1_both_transfer_encoding_and_content_length_close(srv):
    # 6.1: "Regardless, the server MUST close the connection after responding to such a
    # request to avoid the potential attacks." (this server rejects: 400)
    status, _, _, closed = one(srv, b"GET " + OBJ + b" HTTP/1.1\r\nHost: a\r\nContent-Length:"
                               b" 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert (status, closed) == (400, True)


@pytest.mark.parametrize("fields", [b"Content-Length: abc\r\n", b"Content-Length: -1\r\n",
                                    b"Content-Length: 1, 2\r\n", b"Content-Length: 0x5\r\n",
                                    b"Content-Length: 1\r\nContent-Length: 2\r\n"])
def test_6_3_invalid_content_length_is_400_and_close(srv, fields):
    # 6.3 (5): "If a message is received without Transfer-Encoding and with an invalid
    # Content-Length header field, then the message framing is invalid and the recipient
    # MUST treat it as an unrecoverable error ... the server MUST respond with a 400 (Bad
    # Request) status code and then close the connection."
    status, _, _, closed = one(srv, b"GET " + OBJ + b" HTTP/1.1\r\nHost: a\r\n" + fields
                               + b"\r\nab")
    assert (status, closed) == (400, True)


def test_6_3_bodies_are_framed_and_the_next_request_read(srv):
    # 6.3 (4), (6), (7): a chunked body ends at its last chunk, a Content-Length body after
    # that many octets, and a request with neither has none: the bytes after each are the
    # next request.
    data = srv.objects["small.m4s"]
    w = Wire(srv)
    try:
        w.send(b"GET " + OBJ + b" HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nGET /\r\n0\r\n\r\n"
               b"GET " + OBJ + b" HTTP/1.1\r\nHost: a\r\nContent-Length: 14\r\n\r\n"
               b"GET /x HTTP/1"
               b"\nGET " + OBJ + b"/range/0-1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert w.response()[::2] == (200, data)
        assert w.response()[::2] == (200, data)
        assert w.response()[::2] == (200, data[:2])
    finally:
        w.close()


def test_6_1_no_transfer_encoding_in_responses(srv):
    # 6.1: "A server MUST NOT send a response containing Transfer-Encoding unless the
    # corresponding request indicates HTTP/1.1"; this server never sends one.
    for version in (b"1.0", b"1.1"):
        for target in (OBJ, b"/o/none", b"/health"):
            status, fields, _, _ = one(srv, b"GET " + target + b" HTTP/" + version
                                       + b"\r\nHost: a\r\n\r\n")
            assert "transfer-encoding" not in fields, (version, target, status)


@pytest.mark.parametrize(("target", "fields"), [
    (OBJ, b""), (OBJ, b"Range: bytes=10-99\r\n"), (OBJ, b"Range: bytes=0-0,5-9\r\n"),
    (OBJ + b"/range/3-7", b""), (b"/o/none", b""), (OBJ, b"Range: bytes=99999-\r\n")])
def test_6_2_content_length_of_head_is_that_of_get(srv, target, fields):
    # 6.2: "a server MUST NOT send Content-Length in such a response [to HEAD] unless its
    # field value equals the decimal number of octets that would have been sent in the
    # content of a response if the same request had used the GET method."
    request = b" " + target + b" HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
    get_status, get_fields, body, _ = one(srv, b"GET" + request)
    head_status, head_fields, _, _ = one(srv, b"HEAD" + request, head_only=True)
    assert head_status == get_status
    assert head_fields["content-length"] == [str(len(body))]


def test_6_2_content_length_of_304_is_absent_or_that_of_200(srv):
    # 6.2: "a server MUST NOT send Content-Length in such a response [304] unless its field
    # value equals the decimal number of octets that would have been sent in the content
    # of a 200 (OK) response to the same request."
    _, fields, body, _ = one(srv, b"GET " + OBJ + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    etag = fields["etag"][0].encode()
    status, fields, _, _ = one(srv, b"GET " + OBJ + b" HTTP/1.1\r\nHost: a\r\nIf-None-Match: "
                               + etag + b"\r\n\r\n", head_only=True)
    assert status == 304
    assert fields.get("content-length", [str(len(body))]) == [str(len(body))]
