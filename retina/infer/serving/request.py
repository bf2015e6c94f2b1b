"""The body of ``POST /predict``: the image's bytes and the options, within ``max_bytes``.

Two ways to send an image:

- its bytes as the body, ``Content-Type: image/...`` or ``application/octet-stream`` (or
  none), options in the query string (``/predict?conf=0.3``);
- a multipart upload (``multipart/form-data``, a browser form, ``curl -F image=@tile.png``):
  one file field, options as other fields or in the query string.

Any other content type is 415. The size is checked on ``Content-Length`` before anything
is read, and again while reading (a chunked body has no length): over ``max_bytes`` is 413.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from retina.infer.serving.decode import BadRequest

RAW_TYPES = ("image/", "application/octet-stream")
FORM_TYPE = "multipart/form-data"
MAX_FIELDS = 8  # options of a multipart upload


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or 413 as soon as it is known to be over ``max_bytes``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise BadRequest(413, f"upload of {int(length)} bytes is over max_bytes={max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"upload of more than {max_bytes} bytes is over "
                                  f"max_bytes={max_bytes}")
        chunks.append(chunk)
    return b"".join(chunks)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def image_and_options(request: Request, max_bytes: int) -> tuple[bytes, dict[str, str]]:
    """The uploaded file's bytes and the options (query string, then form fields)."""
    kind = content_type(request)
    options = dict(request.query_params)
    if kind and kind != FORM_TYPE and not kind.startswith(RAW_TYPES):
        raise BadRequest(415, f"content type {kind!r}: send the image's bytes as image/png, "
                              "image/jpeg, ... or application/octet-stream (curl -H "
                              "'Content-Type: image/png' --data-binary @FILE), or a multipart "
                              "upload (curl -F image=@FILE)")
    body = await read_body(request, max_bytes)
    if kind != FORM_TYPE:
        return body, options
    parser = MultiPartParser(request.headers, _once(body), max_files=1, max_fields=MAX_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise BadRequest(400, f"bad multipart upload: {err.message}") from None
    files = [v for v in form.values() if isinstance(v, UploadFile)]
    if not files:
        raise BadRequest(400, "multipart upload without a file: send the image as a file "
                              "field (curl -F image=@tile.png)")
    data = await files[0].read()
    await form.close()
    options.update({k: v for k, v in form.items() if isinstance(v, str)})
    return data, options
