"""Serving a model over HTTP (``retina serve``, ``retina.serve``).

    model.py     load the file once, choose the runtime, describe it for /info
    request.py   the body of POST /predict: raw bytes or multipart, within max_bytes
    decode.py    bytes -> uint8 RGB image, refusing bombs, truncated files and non-images
    options.py   conf / max_det / classes / tile of a request, and what they keep
    batcher.py   dynamic batching of concurrent requests (max_batch, batch_timeout)
    response.py  detections -> JSON (COCO boxes, the numbers of ``retina predict``)
    app.py       the Starlette application: /, /health, /info, /predict, the API key
    server.py    the socket and uvicorn; SIGTERM answers the requests in flight
    page.html    the page at / (inline JS and CSS)

Why Starlette + uvicorn and not LitServe: LitServe 0.2.19 (read and tried, 2026-12-07)
reads only JSON or form bodies before ``decode_request`` (image bytes as the body are a
500), fails every request of a batch when one request's decoding fails, leaves its
API-server, manager and inference processes running and bound to the port when its main
process gets SIGTERM, accepts no ``port=0`` and owns ``/``. Its batching semantics
(``max_batch_size``, ``batch_timeout``) are kept here in ``batcher.py``, with
``/health`` and ``/info`` as LitServe names them. More in docs/serve.md.
"""
