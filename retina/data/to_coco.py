"""Pascal VOC and YOLO annotations to checked COCO JSON, cached on disk.

Training and evaluation then run on the COCO file like on any COCO data
(`retina.data.coco.CocoDetection`, pycocotools), so every format is evaluated alike.

Command line (also ``python -m retina.data.to_coco ...``)::

    retina convert voc ROOT out=FILE.json [split=train] [classes=[a,b]] [skip_bad=true]
    retina convert yolo ROOT split=val out=FILE.json

The written ``file_name`` of each image is relative to ROOT: train on the result with
``data=coco data.train_ann=FILE.json data.train_images=ROOT ...``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from retina.cli import USAGE_ERROR, fail, parse_options, print_usage, split_positional, wants_help
from retina.data import voc, yolo
from retina.data.cache import write_json
from retina.data.datamodule import DetectionDataModule
from retina.data.validate import Report, records_to_coco

log = logging.getLogger(__name__)

FORMATS = ("voc", "yolo")
# Bump when the converted output changes for the same input: cached files are rebuilt.
CONVERTER_VERSION = 1
# (cache file, fingerprint) pairs whose report this process has logged: Lightning and
# `retina.training.run.build` both call prepare_data, and the report is wanted once per run.
_reported: set[tuple[Path, str]] = set()


def _options(
    fmt: str,
    skip_bad: bool = False,
    classes: list[str] | None = None,
    difficult: str = "ignore",
    one_based: bool = False,
) -> dict:
    """The conversion options of ``fmt`` as a plain dict (part of the cache key)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}: expected one of {FORMATS}")
    if fmt == "yolo":
        if classes or difficult != "ignore" or one_based:
            raise ValueError(
                "classes, difficult and one_based are VOC options: YOLO class names come "
                "from data.yaml and YOLO has no difficult flag"
            )
        return {"skip_bad": bool(skip_bad)}
    if difficult not in voc.DIFFICULT:
        raise ValueError(f"difficult={difficult!r}: expected one of {voc.DIFFICULT}")
    return {
        "skip_bad": bool(skip_bad),
        "classes": [str(c) for c in classes] if classes else None,
        "difficult": str(difficult),
        "one_based": bool(one_based),
    }


def convert(fmt: str, root: str | Path, split: str | None, **options) -> tuple[dict, Report]:
    """Read one split of a VOC or YOLO dataset as checked COCO.

    Args:
        fmt: ``"voc"`` or ``"yolo"``.
        root: Dataset root.
        split: Split name (VOC: None for every XML file).
        **options: ``skip_bad``; for VOC also ``classes``, ``difficult``, ``one_based``
            (see `retina.data.voc.read_voc`).

    Returns:
        The COCO dict (``file_name`` relative to ``root``) and the report of what was
        dropped, clipped or skipped.
    """
    opts = _options(fmt, **options)
    report = Report(f"{fmt} {root} split {split or '(all files)'}", opts.pop("skip_bad"))
    if fmt == "voc":
        categories, records = voc.read_voc(root, split, report, **opts)
    else:
        if split is None:
            raise ValueError("a YOLO split needs a name (train, val, ...)")
        categories, records = yolo.read_yolo(root, split, report)
    coco = records_to_coco(records, categories, report)
    coco["info"] = {
        "description": f"{fmt} annotations of {Path(root).resolve()} split {split}, "
        "converted by retina.data.to_coco",
        "retina": {"report": report.to_dict()},
    }
    return coco, report


def fingerprint(fmt: str, root: str | Path, split: str | None, options: dict) -> str:
    """Hash of the converter version, the options and the path, size and modification
    time of every input file: a cached conversion is reused while this is unchanged."""
    reader = voc if fmt == "voc" else yolo
    h = hashlib.sha256(json.dumps([CONVERTER_VERSION, fmt, split, options]).encode())
    for path in reader.source_files(Path(root), split):
        st = path.stat() if path.exists() else None
        h.update(f"{path}\0{st and st.st_size}\0{st and st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_file(
    cache_dir: str | Path, fmt: str, root: str | Path, split: str | None, **options
) -> Path:
    """Where a converted split is cached: one file per (root, split, options)."""
    key = json.dumps([str(Path(root).resolve()), fmt, split, _options(fmt, **options)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{fmt}_{split or 'all'}_{digest}.json"


def cached_coco(
    fmt: str, root: str | Path, split: str | None, cache_dir: str | Path, **options
) -> Path:
    """Convert one split to COCO JSON under ``cache_dir``, or reuse the cached file if its
    inputs are unchanged (see `fingerprint`). Logs the report line either way, once per
    process.

    Returns:
        Path of the COCO JSON (``file_name`` relative to ``root``).
    """
    out = cache_file(cache_dir, fmt, root, split, **options)
    key = fingerprint(fmt, root, split, _options(fmt, **options))
    if out.is_file():
        try:
            cached = json.loads(out.read_text())["info"]["retina"]
        except (json.JSONDecodeError, KeyError, TypeError):
            cached = {}
        if cached.get("fingerprint") == key:
            if (out, key) not in _reported:
                Report(**cached["report"]).log(log)
                _reported.add((out, key))
            return out
    coco, report = convert(fmt, root, split, **options)
    coco["info"]["retina"]["fingerprint"] = key
    write_json(out, coco)
    report.log(log)
    _reported.add((out, key))
    return out


def _prepare_splits(
    fmt: str, root: str, splits: list[str | None], cache_dir: str, options: dict
) -> None:
    for split in dict.fromkeys(splits):  # once per distinct split
        cached_coco(fmt, root, split, cache_dir, **options)


def converted_datamodule(
    format: str,
    root: str | Path,
    train_split: str | None = "train",
    val_split: str | None = "val",
    cache_dir: str | Path = "data/converted",
    skip_bad: bool = False,
    classes: list[str] | None = None,
    difficult: str = "ignore",
    one_based: bool = False,
    **kwargs,
) -> DetectionDataModule:
    """A `DetectionDataModule` over VOC or YOLO splits, converted to COCO by ``prepare_data``.

    Args:
        format: ``"voc"`` or ``"yolo"``.
        root: Dataset root.
        train_split: Training split (VOC: None for every XML file).
        val_split: Validation split.
        cache_dir: Folder of the converted COCO files (and of the decode cache of the
            images, see `DetectionDataModule`).
        skip_bad: Skip and count bad files instead of raising.
        classes: VOC class names in label order (None: collected from the files).
        difficult: VOC ``"ignore"`` or ``"keep"``.
        one_based: VOC devkit pixel convention (see `retina.data.voc.read_voc`).
        **kwargs: Any other `DetectionDataModule` argument (batch size, input size, ...).
    """
    options = _options(format, skip_bad, classes, difficult, one_based)
    root, cache_dir = str(root), str(cache_dir)
    prepare = functools.partial(
        _prepare_splits, format, root, [train_split, val_split], cache_dir, options
    )
    return DetectionDataModule(
        train_ann=cache_file(cache_dir, format, root, train_split, **options),
        train_images=root,
        val_ann=cache_file(cache_dir, format, root, val_split, **options),
        val_images=root,
        prepare=prepare,
        skip_bad=skip_bad,
        val_split=f"{val_split!r} of {root}",
        cache_dir=cache_dir,
        **kwargs,
    )


@dataclass
class ConvertOptions:
    """Options of ``retina convert voc|yolo ROOT`` (``key=value``)."""

    out: str = MISSING  # COCO JSON to write
    # VOC: ImageSets/Main/<split>.txt (None: every XML file); YOLO: data.yaml key or images/<split>
    split: str | None = None
    skip_bad: bool = False  # skip and count bad files instead of stopping at the first
    classes: list[str] | None = None  # VOC class names in label order (None: all found, sorted)
    difficult: str = "ignore"  # VOC difficult objects: ignore (iscrowd) or keep (ordinary)
    one_based: bool = False  # VOC devkit convention: subtract 1 from xmin and ymin


def main(argv: list[str] | None = None) -> int:
    """``retina convert voc|yolo ROOT out=FILE.json [key=value ...]``: writes checked COCO JSON
    (boxes clipped to the image, degenerate boxes dropped, bad files are errors)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if wants_help(args):
        return print_usage("convert")
    example = "retina convert voc data/VOCdevkit/VOC2012 split=train out=train.json"
    (fmt, root), options = split_positional(args, 2, "voc|yolo ROOT", example)
    if fmt not in FORMATS:
        fail(f"unknown annotation format {fmt!r}: expected one of {', '.join(FORMATS)}", example)
    opts = parse_options(ConvertOptions, options, example)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        coco, report = convert(fmt, root, opts.split, skip_bad=opts.skip_bad,
                               classes=opts.classes, difficult=opts.difficult,
                               one_based=opts.one_based)
    except (ValueError, FileNotFoundError) as e:  # bad input: the message says where
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    write_json(Path(opts.out), coco)
    report.log(log)
    print(
        f"wrote {opts.out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
        f"{len(coco['categories'])} classes; image paths are relative to {root}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
