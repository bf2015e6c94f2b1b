"""``retina serve`` as a process on 127.0.0.1 with the session's tiny trained RetinaNet: its
start, the detections of ``retina predict``, bad uploads, the API key, the page in headless
Chromium, 500 requests at concurrency 8, and SIGTERM with a request in flight.

One server serves the module (with an API key); the SIGTERM test ends it and comes last.
Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from retina.bench.serve import (
    HOST,
    free_port,
    get,
    serve_bench,
    start_server,
    stop_server,
    wait_healthy,
)
from retina.data.coco import read_rgb
from retina.infer.serving.app import make_app
from retina.infer.serving.batcher import Batcher
from retina.infer.serving.model import load_served
from retina.options import PredictOptions
from retina.predict import predict
from retina.serve import API_KEY_ENV
from retina.training.config import ROOT
from tests.helpers import png_header

KEY = "e2e-key"
TILES = sorted((ROOT / "data" / "neon_trees" / "val").glob("*.png"))
MAX_BYTES, MAX_PIXELS = 2_000_000, 4_000_000


@dataclass
class Running:
    proc: subprocess.Popen
    port: int
    start_s: float  # Popen to the first 200 of /health
    imports_s: float  # a bare `python -c "import ..."` of what the server imports

    def post(self, body: bytes, content_type: str | None = "image/png", query: str = "",
             key: str | None = KEY) -> tuple[int, dict]:
        headers = {"Content-Type": content_type} if content_type else {}
        if key:
            headers["X-API-Key"] = key
        conn = http.client.HTTPConnection(HOST, self.port, timeout=300)
        try:
            conn.request("POST", f"/predict{query}", body=body, headers=headers)
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read() or b"{}")
        finally:
            conn.close()


def import_seconds() -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "import retina.serve, retina.infer.serving.app, "
                    "retina.infer.serving.server, retina.infer.serving.model"], check=True,
                   cwd=ROOT, timeout=300)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def server(trained_retinanet):
    imports_s = import_seconds()
    port = free_port()
    proc = start_server(trained_retinanet.ckpt, port,
                        [f"max_bytes={MAX_BYTES}", f"max_pixels={MAX_PIXELS}"],
                        env={API_KEY_ENV: KEY})
    try:
        start_s = wait_healthy(port, proc, limit=120)
        yield Running(proc, port, start_s, imports_s)
    finally:
        stop_server(proc)


def mosaic_jpeg(side: int = 4) -> bytes:
    """``side`` x ``side`` NEON tiles as one JPEG (1600 px for 4)."""
    tiles = [Image.open(p).convert("RGB") for p in TILES[: side * side]]
    w, h = tiles[0].size
    scene = Image.new("RGB", (w * side, h * side))
    for i, tile in enumerate(tiles):
        scene.paste(tile, ((i % side) * w, (i // side) * h))
    buffer = io.BytesIO()
    scene.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def assert_same(served: list[dict], written: list[dict]) -> None:
    assert len(served) == len(written) > 0
    for a, b in zip(served, written):
        assert a["category_id"] == b["category_id"]
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_health_answers_within_10_s_of_start(server):
    # 10 s on a quiet 2-core machine, most of it imports (torch, torchvision, Lightning).
    # On a loaded one the imports alone can take longer, and everything slows alike: the
    # server's own part (start, model, one warm-up image, bind) is held to half the imports
    assert server.start_s <= max(10.0, 1.5 * server.imports_s + 2.0), (
        server.start_s, server.imports_s)
    assert get(server.port, "/health")[0] == 200


@pytest.mark.parametrize("tile", [None, 160])
def test_predict_gives_the_detections_of_retina_predict(server, trained_retinanet, tile,
                                                        tmp_path):
    image = TILES[0]
    # conf: the model's own threshold (0.005), given to both (retina predict's default is 0.25)
    query = "?conf=0.005" + (f"&tile={tile}" if tile else "")
    status, answer = server.post(image.read_bytes(), query=query)
    assert status == 200, answer
    predict(PredictOptions(model=str(trained_retinanet.ckpt), images=str(image),
                           out=str(tmp_path), progress=False, tile=tile, conf=0.005))
    written = json.loads((tmp_path / "results.json").read_text())
    assert_same(answer["detections"], written)
    assert answer["image"] == {"width": 400, "height": 400}
    assert {d["name"] for d in answer["detections"]} == {"Tree"}


def test_gfl_detections_carry_their_spread(trained_gfl):
    served = load_served(trained_gfl.ckpt)
    batcher = Batcher(served.predict, served.predict_large)
    with TestClient(make_app(served, batcher)) as client:
        answer = client.post("/predict", content=TILES[0].read_bytes(),
                             headers={"Content-Type": "image/png"}).json()
    direct = served.predict([read_rgb(TILES[0])])[0]
    spreads = torch.tensor([d["spread"] for d in answer["detections"]])  # (D, 4) l t r b
    assert spreads.shape == direct["spread"].shape and len(spreads) > 0
    assert torch.allclose(spreads, direct["spread"], atol=1e-4)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_uploads_get_a_4xx_and_the_server_keeps_serving(server):
    good = TILES[0].read_bytes()
    bad = {
        "not an image": (b"tree,0.9\n" * 50, "image/png", 400),
        "truncated": (good[: len(good) // 3], "image/png", 400),
        "zero bytes": (b"", "image/png", 400),
        "over max_bytes": (good * (MAX_BYTES // len(good) + 1), "image/png", 413),
        "wrong content type": (good, "application/json", 415),
        "decompression bomb": (png_header(30_000, 30_000), "image/png", 413),
        "too many pixels": (png_header(2100, 2100), "image/png", 413),
    }
    for what, (body, content_type, status) in bad.items():
        got, answer = server.post(body, content_type)
        assert got == status, (what, answer)
        assert answer["error"] and "\n" not in answer["error"], (what, answer)
        assert server.post(good)[0] == 200, f"not served after {what}"
    assert server.proc.poll() is None


def test_without_the_key_a_request_is_refused(server):
    good = TILES[0].read_bytes()
    assert server.post(good, key=None)[0] == 401
    assert server.post(good, key="guess")[0] == 403
    assert get(server.port, "/info")[0] == 401
    assert get(server.port, "/health")[0] == 200


# ---------------------------------------------------------------- the page, in Chromium


def chromium(window: str = "1000,760"):
    """Headless Chromium through chromedriver (Debian's chromium and chromium-driver, which
    `make test` installs: the Makefile's `browser` target)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("no chromium/chromedriver on PATH: `make browser` (apt-get install "
                    "chromium chromium-driver) installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={window}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(driver))


SET_THRESHOLD = """const s = document.getElementById('thresh'); s.value = arguments[0];
s.dispatchEvent(new Event('input'));"""
# the colour of each drawn box's left edge, halfway down, against the box's own colour
EDGE_PIXELS = """const ctx = document.getElementById('canvas').getContext('2d');
return window.drawnBoxes.map(b => [Array.from(ctx.getImageData(b.x, b.y + Math.floor(b.h / 2),
  1, 1).data.slice(0, 3)), [1, 3, 5].map(i => parseInt(b.color.slice(i, i + 2), 16))]);"""


def try_the_page(url: str, image: Path, key: str | None, threshold: float,
                 screenshot: Path | None = None, window: str = "1000,760"):
    """Open the page, give the key if asked, upload ``image``, draw boxes scoring >=
    ``threshold`` (and save a screenshot): the driver, left open (the caller quits it).
    docs/images/serve.png is ``try_the_page(URL, TILES[0], None, 0.04, PATH, "900,1260")``
    over a model (see docs/serve.md)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium(window)
    wait = WebDriverWait(driver, 60)
    driver.get(url)
    if key:
        wait.until(lambda d: d.find_element(By.ID, "key").is_displayed())
        driver.find_element(By.ID, "key").send_keys(key, Keys.TAB)  # a change event
    wait.until(lambda d: " class" in d.find_element(By.ID, "model").text)
    driver.find_element(By.ID, "file").send_keys(str(image))
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
               in ("done", "error"))
    driver.execute_script(SET_THRESHOLD, threshold)
    if screenshot:
        driver.save_screenshot(str(screenshot))
    return driver


def test_the_page_draws_the_boxes_of_an_uploaded_tile(server, tmp_path):
    driver = try_the_page(f"http://{HOST}:{server.port}/", TILES[0], KEY, 0.0,
                          tmp_path / "page.png")
    try:
        body = driver.find_element("tag name", "body")
        assert body.get_attribute("data-state") == "done", driver.find_element(
            "id", "status").text
        drawn = int(body.get_attribute("data-drawn"))
        assert drawn > 0 and "last.ckpt" in driver.find_element("id", "model").text
        edges = driver.execute_script(EDGE_PIXELS)
        on_edge = sum(pixel == color for pixel, color in edges)
        assert on_edge >= len(edges) / 2, edges[:5]  # labels of other boxes may cover some
        driver.execute_script(SET_THRESHOLD, 1.0)  # the slider hides what scores below it
        assert body.get_attribute("data-drawn") == "0"
    finally:
        driver.quit()
    assert (tmp_path / "page.png").stat().st_size > 10_000


# ---------------------------------------------------------------- load and shutdown


def test_500_requests_at_concurrency_8(trained_retinanet):
    report = serve_bench(trained_retinanet.ckpt, requests=500, concurrency=8, time_limit=600)
    assert report["ok"] == 500 and report["errors"] == {} and report["not_sent"] == 0, report
    assert report["rss_mb"]["growth"] < 50, report["rss_mb"]
    assert report["server"]["mean_batch"] > 1  # requests of different clients shared calls
    assert report["server"]["exit_code"] == -signal.SIGTERM


def test_sigterm_answers_the_request_in_flight_then_ends(server):
    # last: it stops the module's server. A 1600-px scene in 160-px windows takes a while.
    answers = []
    request = threading.Thread(target=lambda: answers.append(
        server.post(mosaic_jpeg(), "image/jpeg", "?tile=160")))
    request.start()
    deadline = time.monotonic() + 120
    while json.loads(get(server.port, "/health")[1])["in_flight"] < 1:
        assert time.monotonic() < deadline and request.is_alive(), "never saw it in flight"
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    request.join(timeout=300)
    (status, answer), = answers
    assert status == 200 and answer["count"] > 0 and answer["image"]["width"] == 1600
    assert server.proc.wait(timeout=60) == -signal.SIGTERM
