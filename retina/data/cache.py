"""Files the data set-up keeps on disk so that the next run skips work: written atomically and
trusted while the size and modification time of every input file are unchanged.

- the converted VOC / YOLO annotations (`retina.data.to_coco.cached_coco`);
- the images known to decode (`decoded_sizes`): every image of a dataset is decoded once at
  set-up, so a truncated or corrupt file stops the run before training, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

# Bump when what `decoded_sizes` stores changes: older cache files are then ignored.
DECODE_CACHE_VERSION = 1


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_stamp(path: Path) -> list[int]:
    """``[size in bytes, modification time in ns]``: a cached result about ``path`` holds
    while this is unchanged."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def decode_cache_file(cache_dir: str | Path, image_dir: str | Path) -> Path:
    """The decode cache of one image folder under ``cache_dir``."""
    digest = hashlib.sha256(str(Path(image_dir).resolve()).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"decoded_{digest}.json"


def decode_size(path: Path) -> tuple[int, int]:
    """Decode every pixel of an image file with PIL (the reader training uses) and return its
    ``(width, height)``; raises what PIL raises for a truncated or corrupt file."""
    with Image.open(path) as im:
        im.load()
        return im.size


def _read_cache(cache_file: Path | None) -> dict[str, list[int]]:
    try:
        data = json.loads(cache_file.read_text()) if cache_file else {}
    except (OSError, json.JSONDecodeError):
        return {}  # none yet, or unreadable: decode again
    return data.get("images", {}) if data.get("version") == DECODE_CACHE_VERSION else {}


def decoded_sizes(
    paths: list[Path], cache_file: Path | None = None
) -> list[tuple[int, int] | Exception]:
    """Decode each image once: ``(width, height)`` of each path, or the exception its decoding
    raised. Images that decoded before, unchanged since (`file_stamp`), come from
    ``cache_file`` (None: no cache); those that decode now are added to it when every image
    decodes.

    Args:
        paths: Existing image files.
        cache_file: JSON cache (see `decode_cache_file`).

    Returns:
        One entry per path, in order.
    """
    cached = _read_cache(cache_file)
    results, decoded, start = [], 0, time.perf_counter()
    for path in paths:
        key, stamp = str(path.resolve()), file_stamp(path)
        entry = cached.get(key)
        if entry and entry[:2] == stamp:
            results.append((entry[2], entry[3]))
            continue
        decoded += 1
        try:
            size = decode_size(path)
        except Exception as err:  # noqa: BLE001 - whatever PIL raises, the caller names the file
            results.append(err)
            continue
        cached[key] = [*stamp, *size]
        results.append(size)
    if decoded:
        log.info("decoded %d of %d images to check them (%.1f s)%s", decoded, len(paths),
                 time.perf_counter() - start, f"; cached in {cache_file}" if cache_file else "")
    # a set with a bad image is decoded again next time: a run stops at it (unless skip_bad),
    # and a failed run writes nothing into the working folder
    if cache_file is not None and decoded and not any(isinstance(r, Exception) for r in results):
        try:
            write_json(cache_file, {"version": DECODE_CACHE_VERSION, "images": cached})
        except OSError as err:  # a cache only saves time: a read-only folder is no error
            log.warning("could not write the decode cache %s: %s", cache_file, err)
    return results
