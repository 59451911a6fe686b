from tests.conftest import make_file


def test_put_then_get(store, tmp_path):
    src = make_file(tmp_path / "a.bin", 100_000)
    rec = store.put("a.mp4", src, "ssd")
    assert store.get("a.mp4") == rec
    with open(store.path_of(rec), "rb") as f:
        assert f.read() == src.read_bytes()
