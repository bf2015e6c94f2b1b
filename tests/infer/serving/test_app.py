"""retina.infer.serving.app over a fake model (Starlette's TestClient, no socket): the routes,
both ways to upload, the options, the API key, and a 4xx in one line for each bad request,
after which the next request is served."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from retina.infer.serving.app import Limits, make_app
from retina.infer.serving.batcher import Batcher
from tests.helpers import png, png_header

KEY = "s3cret"
FORM_WITHOUT_FILE = b'--xyz\r\nContent-Disposition: form-data; name="conf"\r\n\r\n0.2\r\n--xyz--\r\n'


def client_of(served, **limits) -> TestClient:
    batcher = Batcher(served.predict, served.predict_large, max_batch=4, timeout=0.0)
    return TestClient(make_app(served, batcher, Limits(**limits)))


@pytest.fixture
def client(served):
    with client_of(served, max_bytes=20_000) as client:  # the lifespan runs the batcher
        yield client


def raw(client: TestClient, data: bytes, content_type: str = "image/png", **params):
    return client.post("/predict", content=data, params=params,
                       headers={"Content-Type": content_type} if content_type else {})


def test_health_info_and_the_page(client):
    assert client.get("/health").json() == {"status": "ok", "in_flight": 0}
    info = client.get("/info").json()
    assert info["model"] == "fake.ckpt" and info["runtime"] == "eager"
    assert info["classes"] == [{"label": 0, "category_id": 1, "name": "tree"},
                               {"label": 1, "category_id": 7, "name": "shrub"}]
    assert info["input"]["size"] == 64 and info["limits"]["max_bytes"] == 20_000
    assert info["batching"]["max_batch"] == 4 and info["version"]
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "<script src" not in page.text  # nothing from elsewhere


def test_bytes_and_multipart_give_the_same_coco_detections(client):
    data = png(40, 30)
    answer = raw(client, data).json()
    assert answer["image"] == {"width": 40, "height": 30} and answer["count"] == 3
    first = answer["detections"][0]
    # the fake's first box is (0.1, 0.1, 0.5, 0.5) of the image: x 4, y 3, w 16, h 12
    assert first == {"category_id": 1, "bbox": pytest.approx([4.0, 3.0, 16.0, 12.0]),
                     "score": pytest.approx(0.9), "label": 0, "name": "tree"}
    for content_type in ("application/octet-stream", None):
        assert raw(client, data, content_type).json()["detections"] == answer["detections"]
    form = client.post("/predict", files={"image": ("x.png", data, "image/png")})
    assert form.json()["detections"] == answer["detections"]


def test_options_in_the_query_or_the_form(client, served):
    data = png()
    assert [d["score"] for d in raw(client, data, conf="0.5").json()["detections"]] == \
        pytest.approx([0.9, 0.6])
    assert [d["name"] for d in raw(client, data, classes="shrub").json()["detections"]] == ["shrub"]
    form = client.post("/predict", files={"image": ("x.png", data)},
                       data={"max_det": "1", "classes": "1"})  # category id 1: tree
    assert [d["name"] for d in form.json()["detections"]] == ["tree"]
    assert raw(client, data, tile="64").json()["count"] == 3
    assert served.predictor.tiles == [64]  # window by window


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("send, status, reason", [
    (lambda c: raw(c, b"just text", "text/plain"), 415, "content type 'text/plain': send"),
    (lambda c: raw(c, png(), "application/json"), 415, "content type 'application/json'"),
    (lambda c: raw(c, b""), 400, "empty upload"),
    (lambda c: raw(c, b"GIF89a but not really"), 400, "not an image in a served format"),
    (lambda c: raw(c, b"\x00" * 30), 400, "not an image in a served format"),
    (lambda c: raw(c, png()[:300]), 400, "unreadable image: image file is truncated"),
    (lambda c: raw(c, b"\x89PNG" + b"\x00" * 30_000), 413,
     "upload of 30004 bytes is over max_bytes=20000"),
    (lambda c: raw(c, png_header(8000, 8000)), 413, "image of 8000 x 8000 = 64000000 pixels"),
    (lambda c: raw(c, png(), cnf="0.3"), 400, "unknown option 'cnf' (did you mean conf?)"),
    (lambda c: raw(c, png(), classes="tre"), 400, "classes: unknown class 'tre' (did you mean"),
    (lambda c: c.post("/predict", files={"notes": ("a.txt", b"x")}, data={"conf": "0.2"}), 400,
     "not an image in a served format"),
    (lambda c: c.post("/predict", content=FORM_WITHOUT_FILE,
                      headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400,
     "multipart upload without a file: send the image as a file field"),
    (lambda c: c.post("/predict", content=b"conf=0.2",
                      headers={"Content-Type": "multipart/form-data; boundary=xyz"}), 400,
     "bad multipart upload"),
    (lambda c: c.post("/predict", files=[("a", ("a.png", png())), ("b", ("b.png", png()))]),
     400, "bad multipart upload: Too many files"),
], ids=["text", "json", "empty", "gif_junk", "zeros", "truncated", "too_many_bytes",
        "too_many_pixels", "unknown_option", "unknown_class", "form_text_file", "form_no_file",
        "form_broken", "form_two_files"])
def test_a_bad_request_is_a_4xx_in_one_line_and_the_next_is_served(client, send, status, reason):
    answer = send(client)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error.startswith(reason) and "\n" not in error, error
    assert raw(client, png()).status_code == 200


def test_a_chunked_upload_over_max_bytes_is_refused_while_it_is_read(client):
    chunks = (b"\x00" * 8192 for _ in range(4))  # no Content-Length: read until over
    answer = client.post("/predict", content=chunks, headers={"Content-Type": "image/png"})
    assert answer.status_code == 413
    assert answer.json()["error"] == ("upload of more than 20000 bytes is over max_bytes=20000")


def test_a_prediction_that_fails_is_a_500_in_one_line(served):
    def broken(images):
        raise RuntimeError("out of memory\nsecond line")

    served.predictor.__call__ = broken
    served.predict = broken
    with client_of(served) as client:
        answer = raw(client, png())
        assert answer.status_code == 500
        assert answer.json() == {"error": "prediction failed: out of memory second line"}
        assert client.get("/health").status_code == 200


def test_with_a_key_predict_and_info_need_it(served):
    with client_of(served, api_key=KEY) as client:
        for path, send in (("/predict", lambda h: client.post("/predict", content=png(), headers=h)),
                           ("/info", lambda h: client.get("/info", headers=h))):
            missing = send({})
            assert missing.status_code == 401, path
            assert missing.json()["error"].startswith("this server needs an API key")
            assert send({"X-API-Key": "guess"}).status_code == 403
            assert send({"X-API-Key": KEY}).status_code == 200
            assert send({"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
