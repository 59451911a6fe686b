"""The access log: exact lines, escaping of client data, buffering, rotation, full disks,
and whole lines when several processes append to one file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oca.errors import OcaError
from oca.http import accesslog
from oca.http.accesslog import MAX_BUFFERED_LINES, AccessLog
from tests.mounts import Mounts, mounts  # noqa: F401  (a fixture)

KEYS = {"ts", "appliance", "method", "object", "status", "bytes", "range", "client", "dur_ms",
        "tier"}


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]


def one_line(log: AccessLog, *args, **kwargs) -> tuple[str, dict]:
    """Log one response, return its raw line and the parsed object."""
    log.log(*args, **kwargs)
    [raw] = log.lines
    log.lines.clear()
    assert raw.endswith("\n") and raw.count("\n") == 1
    return raw, json.loads(raw)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "log" / "oca" / "access.jsonl"


def test_object_line_exact(log_path: Path):
    with AccessLog(log_path, "a1") as log:
        log.log(1700000000.1234, "GET", "title-1.h264.1080p.mp4", 206, 1048576,
                "bytes=0-1048575", "192.0.2.7", 0.41261, "ssd")
        log.log(1700000000.9996, "HEAD", "title-2", 200, 0, None, "2001:db8::7", 3.0, None)
    first, second = lines_of(log_path)
    assert first == {"ts": 1700000000.123, "appliance": "a1", "method": "GET",
                     "object": "title-1.h264.1080p.mp4", "status": 206, "bytes": 1048576,
                     "range": "bytes=0-1048575", "client": "192.0.2.7", "dur_ms": 0.413,
                     "tier": "ssd"}
    assert second == {"ts": 1700000001.0, "appliance": "a1", "method": "HEAD",
                      "object": "title-2", "status": 200, "bytes": 0, "range": None,
                      "client": "2001:db8::7", "dur_ms": 3.0, "tier": None}
    raw = log_path.read_text().splitlines()[0]
    assert raw.startswith('{"ts":1700000000.123,"appliance":"a1",')
    assert ',"dur_ms":0.413,' in raw


@pytest.mark.parametrize("tier", ["ssd", "hdd", None])
def test_hot_path_lines_equal_the_general_one(log_path: Path, tier: str | None):
    # log_object and log_plain build the line from fragments rendered once; the bytes must
    # be those of log() for the same response.
    with AccessLog(log_path, "a1") as log:
        expected, _ = one_line(log, 1700000000.1234, "GET", "t-1.mp4", 200, 16384, None,
                               "192.0.2.7", 0.41261, tier)
        log.log_object(1700000000.1234, accesslog.object_prefix("GET", "t-1.mp4"), 200, 16384,
                       None, accesslog.json_str("192.0.2.7"), 0.41261, accesslog.json_str(tier))
        before, after = accesslog.plain_get_fragments("t-1.mp4", 16384, tier)
        log.log_plain(1700000000.1234, before, accesslog.json_str("192.0.2.7"), 0.41261, after)
        assert log.lines == [expected, expected]
        log.lines.clear()


def test_line_without_object_carries_the_path(log_path: Path):
    log = AccessLog(log_path, "a1")
    _, line = one_line(log, 1700000000.0, "GET", None, 404, 0, None, "192.0.2.7", 0.05,
                       None, path="/o/../../etc/passwd")
    assert set(line) == KEYS | {"path"}
    assert line["object"] is None and line["path"] == "/o/../../etc/passwd"
    _, line = one_line(log, 1700000000.0, "GET", None, 414, 0, None, "192.0.2.7", 0.05,
                       None, path="/" + "x" * 5000)
    assert line["path"] == "/" + "x" * 255
    _, line = one_line(log, 1700000000.0, "GET", None, 400, 0, None, "192.0.2.7", 0.05, None)
    assert line["path"] is None
    log.close()


def test_timestamps_round_to_the_millisecond(log_path: Path):
    log = AccessLog(log_path, "a1")
    # The millisecond text is cached; each must still be the one ts rounds to.
    for ts in (1700000000.123, 1700000000.1234, 1700000000.1235, 1700000000.1229,
               1700000000.0, 1699999999.9999, 1700000000.0004, 1700000000.0005001, 0.0):
        _, line = one_line(log, ts, "GET", "a", 200, 1, None, "c", 1.0, None)
        assert line["ts"] == round(ts, 3), ts
    log.close()


def test_client_data_is_escaped(log_path: Path):
    log = AccessLog(log_path, "site \"x\"\n")
    raw, line = one_line(log, 1.0, 'G"E\\T\n', "a", 405, 0, 'bytes="0-1"\r\n\x00\u2028\udc80',
                         "192.0.2.7", 1.0, None)
    assert raw.isascii()
    assert line["appliance"] == "site \"x\"\n"
    assert line["method"] == 'G"E\\T\n'
    assert line["range"] == 'bytes="0-1"\r\n\x00\u2028\udc80'
    log.close()


header_text = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),  # how HTTP headers decode
)


@settings(max_examples=300, deadline=None)
@given(rng=header_text, path=header_text, method=header_text)
def test_any_client_string_round_trips(rng: str, path: str, method: str):
    with AccessLog(Path(os.devnull), "a1") as log:
        lines = [
            one_line(log, 1700000000.5, method, None, 400, 0, rng, "192.0.2.7", 0.5, None,
                     path=path),
            one_line(log, 1700000000.5, method, "ok-id", 206, 10, rng, "192.0.2.7", 0.5, "hdd"),
        ]
    for raw, parsed in lines:
        assert raw.isascii()
        assert parsed["range"] == rng[:accesslog.MAX_RANGE_CHARS]
        assert parsed["method"] == method[:accesslog.MAX_METHOD_CHARS]
        if parsed["object"] is None:
            assert parsed["path"] == path[:accesslog.MAX_PATH_CHARS]


def test_nothing_on_disk_before_flush(log_path: Path):
    log = AccessLog(log_path, "a1")
    assert log_path.exists() and log_path.stat().st_size == 0
    for i in range(100):
        log.log(1700000000.0 + i, "GET", f"id{i}", 200, i, None, "192.0.2.7", 1.0, "hdd")
    assert log_path.stat().st_size == 0
    log.flush()
    assert [line["object"] for line in lines_of(log_path)] == [f"id{i}" for i in range(100)]
    log.flush()  # nothing buffered: nothing written
    assert len(lines_of(log_path)) == 100
    log.close()


def test_file_and_folder_are_created(log_path: Path):
    old = os.umask(0o022)
    try:
        AccessLog(log_path, "a1").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o644


def test_appends_to_an_existing_file(log_path: Path):
    log_path.parent.mkdir(parents=True)
    log_path.write_text('{"old": 1}\n')
    with AccessLog(log_path, "a1") as log:
        log.log(1.0, "GET", "a", 200, 1, None, "c", 1.0, None)
    assert [set(line) for line in lines_of(log_path)] == [{"old"}, KEYS]


def test_unopenable_path_names_file_and_reason(tmp_path: Path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(OcaError, match=r"not-a-folder/access\.jsonl.*(Not a directory|exists)"):
        AccessLog(blocker / "access.jsonl", "a1")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(OcaError, match=r"access log .*folder: Is a directory"):
        AccessLog(folder, "a1")


def test_logging_off():
    log = AccessLog(None, "a1")
    assert not log.enabled
    log.log(1.0, "GET", "a", 200, 1, None, "c", 1.0, None)
    log.flush()
    log.reopen()
    log.close()
    assert log.lines == []


def test_reopen_after_rename(log_path: Path):
    log = AccessLog(log_path, "a1")
    assert log.enabled
    log.log(1.0, "GET", "before", 200, 1, None, "c", 1.0, None)
    rotated = log_path.with_name("access.jsonl.1")
    log_path.rename(rotated)  # logrotate, then SIGHUP
    log.log(2.0, "GET", "still-before", 200, 1, None, "c", 1.0, None)
    log.reopen()
    log.log(3.0, "GET", "after", 200, 1, None, "c", 1.0, None)
    log.close()
    assert [line["object"] for line in lines_of(rotated)] == ["before", "still-before"]
    assert [line["object"] for line in lines_of(log_path)] == ["after"]


def test_failed_reopen_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "logs" / "access.jsonl"
    log = AccessLog(path, "a1")
    path.rename(tmp_path / "kept.jsonl")
    path.parent.rmdir()
    path.parent.write_text("")  # the folder is now a file: the path cannot be opened
    with pytest.raises(OcaError, match="access.jsonl"):
        log.reopen()
    log.log(1.0, "GET", "a", 200, 1, None, "c", 1.0, None)
    log.close()
    assert [line["object"] for line in lines_of(tmp_path / "kept.jsonl")] == ["a"]


def test_big_buffer_flushes_early(log_path: Path):
    log = AccessLog(log_path, "a1")
    for i in range(MAX_BUFFERED_LINES - 1):
        log.log(1.0, "GET", f"id{i}", 200, 1, None, "c", 1.0, None)
    assert log_path.stat().st_size == 0
    log.log(1.0, "GET", "last", 200, 1, None, "c", 1.0, None)
    lines = lines_of(log_path)
    assert len(lines) == MAX_BUFFERED_LINES and lines[-1]["object"] == "last"
    assert log.lines == []
    log.close()


def test_write_errors_are_counted_not_raised():
    log = AccessLog(Path("/dev/full"), "a1")  # every write: ENOSPC
    for _ in range(3):
        log.log(1.0, "GET", "a", 200, 1, None, "c", 1.0, None)
    log.flush()
    log.log(1.0, "GET", "a", 200, 1, None, "c", 1.0, None)
    log.close()
    assert log.write_errors == 2 and log.lines_dropped == 4
    assert log.last_error is not None and log.last_error.strerror == "No space left on device"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts a tmpfs")
def test_full_filesystem_then_space_again(mounts: Mounts):  # noqa: F811  (the fixture)
    disk = mounts.tmpfs("logs", size="64k")
    path = disk.path / "access.jsonl"
    log = AccessLog(path, "a1")
    filler = disk.fill(leave=4096)  # one page left
    for i in range(100):  # ~20 KB: the write stops short at the full page, then ENOSPC
        log.log(1.0, "GET", f"id{i}", 206, 1, "bytes=0-1", "192.0.2.7", 1.0, "ssd")
    log.flush()
    assert log.write_errors == 1
    assert log.last_error is not None and log.last_error.strerror == "No space left on device"
    log.log(1.0, "GET", "lost", 206, 1, "bytes=0-1", "192.0.2.7", 1.0, "ssd")
    log.flush()  # still full
    assert log.write_errors == 2
    filler.unlink()  # the operator frees space
    log.log(2.0, "GET", "after", 200, 1, None, "192.0.2.7", 1.0, "ssd")
    log.close()
    raw = path.read_text(encoding="ascii").split("\n")
    assert raw[-1] == ""  # the file ends with a whole line
    *written, fragment, last = raw[:-1]
    whole = [json.loads(line)["object"] for line in written]
    assert whole == [f"id{i}" for i in range(len(whole))] and len(whole) > 10
    with pytest.raises(ValueError):
        json.loads(fragment)  # cut by the full disk, on a line of its own
    with AccessLog(Path(os.devnull), "a1") as formatter:
        cut, _ = one_line(formatter, 1.0, "GET", f"id{len(whole)}", 206, 1, "bytes=0-1",
                          "192.0.2.7", 1.0, "ssd")
    assert fragment and cut.startswith(fragment)
    assert json.loads(last)["object"] == "after"
    assert len(whole) + log.lines_dropped == 101


def test_processes_appending_at_once_write_whole_lines(tmp_path: Path):
    path = tmp_path / "access.jsonl"
    writers, lines_each = 4, 3000
    pids = []
    for w in range(writers):
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                log = AccessLog(path, f"worker{w}")
                for i in range(lines_each):
                    # Long ranges: each flush is far above PIPE_BUF (4096 bytes).
                    log.log(1.0, "GET", f"w{w}-{i}", 206, i, "bytes=" + "0-1," * (i % 300),
                            "192.0.2.7", 1.0, "ssd")
                    if i % 97 == 0:
                        log.flush()
                log.close()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    lines = lines_of(path)  # every line parses: none was cut by another process's write
    assert len(lines) == writers * lines_each
    for w in range(writers):
        mine = [line["bytes"] for line in lines if line["appliance"] == f"worker{w}"]
        assert mine == list(range(lines_each))
