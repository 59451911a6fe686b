from oca.digest import digest_bytes


def test_get_whole_object(served):
    status, headers, body = served.request("GET", "/o/big.mp4")
    data = served.objects["big.mp4"]
    assert status == 200
    assert body == data
    assert headers["etag"] == f'"{digest_bytes(data)}"'
    assert headers["content-length"] == str(len(data))
    assert headers["content-type"] == "video/mp4"
