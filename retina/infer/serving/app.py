"""The HTTP application of ``retina serve`` (Starlette, run by uvicorn):

    GET  /          a page to try the model: pick an image, see its boxes (page.html)
    GET  /health    {"status": "ok", "in_flight": N} once the model is loaded (no key needed)
    GET  /info      model, classes, input rules, limits, batching, runtime, version
    POST /predict   an image (bytes or multipart) -> {"image", "count", "detections", ...}

With an API key set, ``/info`` and ``/predict`` need it in ``X-API-Key: KEY`` (or
``Authorization: Bearer KEY``): 401 without a key, 403 with a wrong one. ``/`` and
``/health`` hold no data and stay open (the page asks for the key). Every refusal is a 4xx
with ``{"error": "one line"}``, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from retina.infer.serving.batcher import Batcher
from retina.infer.serving.decode import FORMATS, MAX_BYTES, MAX_PIXELS, BadRequest, decode_image
from retina.infer.serving.model import Served
from retina.infer.serving.options import MIN_TILE, OPTIONS, parse_options, select
from retina.infer.serving.request import image_and_options
from retina.infer.serving.response import prediction_json

log = logging.getLogger(__name__)
KEY_HEADER = "x-api-key"
DECODE_THREADS = 2


@dataclass(frozen=True)
class Limits:
    """What a server accepts and who may ask."""

    max_bytes: int = MAX_BYTES  # upload size
    max_pixels: int = MAX_PIXELS  # width x height of the decoded image
    api_key: str | None = None  # None: no key needed


def page() -> str:
    return resources.files("retina.infer.serving").joinpath("page.html").read_text("utf-8")


def error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


def refused(request: Request, key: str | None) -> JSONResponse | None:
    """401/403 when a key is set and the request does not carry it; else None."""
    if key is None:
        return None
    given = request.headers.get(KEY_HEADER)
    bearer = request.headers.get("authorization", "")
    if given is None and bearer.lower().startswith("bearer "):
        given = bearer[7:].strip()
    if not given:
        return error(401, "this server needs an API key: send the header X-API-Key: KEY")
    if not hmac.compare_digest(given.encode(), key.encode()):
        return error(403, "wrong API key (header X-API-Key)")
    return None


def make_app(served: Served, batcher: Batcher, limits: Limits = Limits()) -> Starlette:
    """The application over a loaded model; its lifespan starts and stops ``batcher`` (on
    shutdown, after the requests in flight are answered)."""
    html = page()
    # images are decoded off the event loop by a few threads of their own: each thread that
    # allocates gets a glibc malloc arena, and with Starlette's pool (up to 40 threads) the
    # server's RSS settled about 80 MB higher under the load test
    decoders = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="retina-decode")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)
            decoders.shutdown()

    async def index(request: Request) -> Response:
        return HTMLResponse(html)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "in_flight": batcher.in_flight})

    async def info(request: Request) -> Response:
        if no := refused(request, limits.api_key):
            return no
        return JSONResponse({
            **served.info(),
            "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                       "formats": list(FORMATS), "min_tile": MIN_TILE},
            "options": list(OPTIONS),
            "batching": {"max_batch": batcher.max_batch, "batch_timeout": batcher.timeout,
                         "workers": batcher.workers, "batches_run": batcher.calls,
                         "mean_batch": round(batcher.images / max(1, batcher.calls), 2)},
        })

    async def predict(request: Request) -> Response:
        if no := refused(request, limits.api_key):
            return no
        start = time.perf_counter()
        try:
            data, raw = await image_and_options(request, limits.max_bytes)
            options = parse_options(raw, served.class_names, served.cat_ids)
            image = await asyncio.get_running_loop().run_in_executor(
                decoders, decode_image, data, limits.max_pixels)
        except BadRequest as bad:
            return error(bad.status, bad.reason)
        try:
            det = await batcher.submit(image, options.tile)
        except Exception as err:  # noqa: BLE001  logged with its traceback by the batcher
            return error(500, f"prediction failed: {' '.join(str(err).split())[:300]}")
        height, width = image.shape[-2:]
        return JSONResponse(prediction_json(
            select(det, options), served.class_names, served.cat_ids, width, height,
            (time.perf_counter() - start) * 1000))

    return Starlette(routes=[
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
    ], lifespan=lifespan)
