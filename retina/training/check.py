"""The dataset doctor (``retina check``): what the data holds, and which of its boxes the
configured anchors and assigner can ever learn.

- Counts per split and class, images without boxes, boxes outside their image or degenerate,
  duplicate image files (:mod:`retina.data.audit`).
- The boxes at the training input size against the anchor sizes of each level.
- The recall ceiling (:mod:`retina.assign.ceiling`): the share of boxes the assigner makes
  positive by its own rule, with no low-quality fallback, per class and per size, and each
  box's best anchor IoU.
- Suggestions (input size, tiles, anchor sizes), each with its ceiling computed the same way.

``retina train`` runs the cheap part at set-up (:func:`setup_line`: the ceiling of up to
:data:`SETUP_IMAGES` training images, one log line; a warning below :data:`WARN_BELOW`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from retina.assign.ceiling import match_boxes, rule_only
from retina.data.audit import boxes_at_input, count_split, duplicate_files, evenly_spaced
from retina.data.coco import CocoDetection
from retina.data.collate import SIZE_DIVISIBLE
from retina.data.tile import crop_boxes, windows
from retina.data.transforms import resized_size
from retina.model.anchors import AnchorGenerator, grid_anchors
from retina.training.config import recipe_line

log = logging.getLogger(__name__)

WARN_BELOW = 0.9  # a ceiling below this is a warning (retina train, retina check)
SETUP_IMAGES = 200  # training images retina train measures at set-up
SIZE_EDGES = (0, 8, 16, 32, 64, 128, 256, 512, math.inf)  # box side (sqrt of area), input px
IOU_EDGES = tuple(np.round(np.arange(0, 1.0001, 0.05), 2).tolist())
MIN_GAIN = 0.005  # a suggestion is listed when it lifts the ceiling by at least this


@dataclass(frozen=True)
class Geometry:
    """How the data config resizes and pads images (:mod:`retina.data.transforms`)."""

    size: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    resize: str = "antialias"
    size_divisible: int = SIZE_DIVISIBLE

    @classmethod
    def of(cls, data: DictConfig) -> Geometry:
        return cls(data.get("size"), data.get("min_size"), data.get("max_size"),
                   data.get("resize") or "antialias",
                   data.get("size_divisible") or SIZE_DIVISIBLE)

    @property
    def side(self) -> int | None:
        """The input's (shorter) side."""
        return self.size or self.min_size or self.max_size

    def scaled(self, factor: float) -> Geometry:
        """Every side times ``factor``, rounded to multiples of 32."""
        def r(v):
            return None if v is None else max(32, int(round(v * factor / 32)) * 32)
        return replace(self, size=r(self.size), min_size=r(self.min_size),
                       max_size=r(self.max_size))

    def overrides(self) -> str:
        """The command-line options of this geometry's sides."""
        if self.size is not None:
            return f"data.size={self.size}"
        parts = [f"data.min_size={self.min_size}" if self.min_size else "",
                 f"data.max_size={self.max_size}" if self.max_size else ""]
        return " ".join(p for p in parts if p)

    def describe(self) -> str:
        if self.size is not None:
            return f"{self.size} x {self.size} px (square)"
        if self.min_size is not None:
            return (f"shorter side {self.min_size} px"
                    + (f", longer side <= {self.max_size} px" if self.max_size else ""))
        if self.max_size is not None:
            return f"longer side {self.max_size} px"
        return "each image at its own size"


def level_shapes(height: int, width: int, size_divisible: int, levels: tuple[int, ...]
                 ) -> list[tuple[int, int]]:
    """(H_l, W_l) of each level's map for one image: the image padded to multiples of
    ``size_divisible``, then halved (rounding up, as stride-2 convs do) to stride 2**l."""
    h = -(-height // size_divisible) * size_divisible
    w = -(-width // size_divisible) * size_divisible
    return [(-(-h // 2**lv), -(-w // 2**lv)) for lv in levels]


# ---------------------------------------------------------------- the ceiling


@dataclass
class Ceiling:
    """The anchors' reach over a set of boxes (one entry per box).

    Attributes:
        labels: (A,) class label.
        side: (A,) sqrt(w * h) at the input size, px.
        positive: (A,) bool: positive by the assigner's own rule.
        best_iou: (A,) highest IoU with any anchor (0 for a box that vanished).
        best_level: (A,) index of that anchor's level (0: P3; -1: vanished).
        vanished: (A,) bool: under a pixel wide or high at the input size (never trained).
        images: images (or tiles) measured.
        of_images: images in the split.
    """

    labels: np.ndarray
    side: np.ndarray
    positive: np.ndarray
    best_iou: np.ndarray
    best_level: np.ndarray
    vanished: np.ndarray
    images: int
    of_images: int

    @property
    def value(self) -> float:
        """The share of boxes positive by the rule (1.0 without boxes)."""
        return float(self.positive.mean()) if len(self.positive) else 1.0

    def per_size(self) -> list[dict]:
        out = []
        for lo, hi in zip(SIZE_EDGES[:-1], SIZE_EDGES[1:]):
            inside = (self.side >= lo) & (self.side < hi)
            if inside.any():
                out.append({"side_px": [lo, None if math.isinf(hi) else hi],
                            "boxes": int(inside.sum()),
                            "ceiling": round(float(self.positive[inside].mean()), 4)})
        return out

    def per_class(self, names: list[str]) -> dict[str, dict]:
        return {name: {"boxes": int((self.labels == k).sum()),
                       "ceiling": round(float(self.positive[self.labels == k].mean()), 4)}
                for k, name in enumerate(names) if (self.labels == k).any()}

    def to_dict(self, names: list[str]) -> dict:
        sides = self.side[~self.vanished]
        return {
            "ceiling": round(self.value, 4), "boxes": len(self.positive),
            "positive": int(self.positive.sum()), "vanished": int(self.vanished.sum()),
            "images_measured": self.images, "images": self.of_images,
            "per_class": self.per_class(names), "per_size": self.per_size(),
            "best_iou_histogram": {"edges": list(IOU_EDGES), "counts": np.histogram(
                self.best_iou[~self.vanished], IOU_EDGES)[0].tolist()},
            "box_side_px": {q: round(float(np.quantile(sides, p)), 1) if len(sides) else None
                            for q, p in (("min", 0), ("p10", 0.1), ("median", 0.5),
                                         ("p90", 0.9), ("max", 1))},
        }


def level_anchors(anchors: AnchorGenerator, shapes: list[tuple[int, int]]) -> list[Tensor]:
    """The generator's anchors of the maps ``shapes`` as its ``forward`` makes them (its cells,
    steps and offset), without keeping them in its cache: a check meets many image sizes."""
    return [grid_anchors(anchors.cell(size), step, h, w, anchors.offset).float()
            for (h, w), size, step in zip(shapes, anchors.sizes, anchors.steps(shapes))]


class Reach:
    """Measures boxes against one anchor generator and assigner (rule only), image by image;
    the anchors of each map size are made once."""

    def __init__(self, anchors: AnchorGenerator, assigner, size_divisible: int) -> None:
        self.anchors = anchors
        self.assigner = rule_only(assigner)
        self.size_divisible = size_divisible
        self._recent: dict[tuple, list[Tensor]] = {}  # the anchors of a few map sizes

    def level_anchors(self, shapes: list[tuple[int, int]]) -> list[Tensor]:
        key = tuple(shapes)
        if key not in self._recent:
            if len(self._recent) >= 16:
                self._recent.clear()
            self._recent[key] = level_anchors(self.anchors, shapes)
        return self._recent[key]

    def measure(self, images: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]],
                of_images: int) -> Ceiling:
        """``images``: per image (or tile), its boxes (n, 4) at the input size, their labels
        (n,) and its (h, w) at the input size."""
        parts = []
        for boxes, labels, hw in images:
            wh = boxes[:, 2:] - boxes[:, :2]
            vanished = (wh < 1).any(axis=1)  # training's SanitizeBoundingBoxes drops them
            shapes = level_shapes(*hw, self.size_divisible, self.anchors.levels)
            match = match_boxes(self.assigner, self.level_anchors(shapes),
                                torch.from_numpy(boxes[~vanished]).float())
            n = len(boxes)
            positive, best_iou = np.zeros(n, bool), np.zeros(n, np.float32)
            best_level = np.full(n, -1, np.int64)
            positive[~vanished] = match.positive.numpy()
            best_iou[~vanished] = match.best_iou.numpy()
            best_level[~vanished] = match.best_level.numpy()
            side = np.sqrt(np.clip(wh, 0, None).prod(axis=1))
            parts.append((labels, side, positive, best_iou, best_level, vanished))
        cols = [np.concatenate(c) if c else np.zeros(0) for c in zip(*parts)] if parts else [
            np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), np.zeros(0),
            np.zeros(0, np.int64), np.zeros(0, bool)]
        return Ceiling(*cols, images=len(images), of_images=of_images)


def image_boxes(dataset: CocoDetection, geometry: Geometry, max_images: int | None
                ) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """Per measured image: its training boxes and labels at the input size, and its size
    there (:func:`retina.data.audit.boxes_at_input`)."""
    at = boxes_at_input(dataset, geometry.size, geometry.min_size, geometry.max_size,
                        geometry.resize, max_images)
    out = []
    for i in at.images:
        rows = at.image_index == i
        out.append((at.boxes[rows], at.labels[rows], tuple(int(v) for v in at.input_hw[i])))
    return out


def tile_boxes(dataset: CocoDetection, geometry: Geometry, tile: int, max_tiles: int | None,
               overlap: float = 0.25, min_visible: float = 0.5
               ) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """What ``retina tile ... tile=TILE`` would make of the dataset, at the input size: per
    tile its boxes (those with ``min_visible`` of their area inside, clipped), resized as
    the data config resizes a tile (:mod:`retina.data.tile`); the tiles of up to
    ``max_tiles`` images (evenly spaced), then up to ``max_tiles`` of those tiles."""
    out = []
    for i in evenly_spaced(len(dataset), max_tiles):
        h, w = (int(v) for v in dataset.sizes[i])
        boxes = dataset._boxes[dataset._offsets[i]:dataset._offsets[i + 1]]
        labels = dataset._labels[dataset._offsets[i]:dataset._offsets[i + 1]]
        for window in windows(w, h, tile, overlap):
            kept, clipped = crop_boxes(boxes, window, min_visible)
            if not len(kept):
                continue  # retina tile leaves out tiles without boxes
            th, tw = window[3] - window[1], window[2] - window[0]
            rh, rw = resized_size(th, tw, geometry.size, geometry.min_size, geometry.max_size,
                                  geometry.resize)
            scale = np.array([rw / tw, rh / th] * 2)
            out.append(((clipped * scale).astype(np.float32), labels[kept], (rh, rw)))
    return [out[k] for k in evenly_spaced(len(out), max_tiles)]


def measure_split(dataset: CocoDetection, anchors: AnchorGenerator, assigner,
                  geometry: Geometry, max_images: int | None) -> Ceiling:
    """The ceiling of a split's training boxes (up to ``max_images`` images, evenly spaced)."""
    reach = Reach(anchors, assigner, geometry.size_divisible)
    return reach.measure(image_boxes(dataset, geometry, max_images), len(dataset))


def describe_assigner(assigner) -> str:
    name = type(assigner).__name__
    if hasattr(assigner, "fg_iou"):
        return f"{name}: a box is positive when an anchor's IoU with it is >= {assigner.fg_iou}"
    if hasattr(assigner, "topk"):
        return (f"{name}: a box is positive when one of its {assigner.topk} nearest anchors per "
                "level has IoU >= the mean + std of theirs and its centre inside the box")
    return name


def describe_anchors(anchors: AnchorGenerator) -> list[dict]:
    """Per level: stride and the anchor sides (sqrt of area: size x scale, any ratio)."""
    return [{"level": f"P{lv}", "stride": stride,
             "sides_px": [round(size * s, 1) for s in anchors.scales]}
            for lv, stride, size in zip(anchors.levels, anchors.strides, anchors.sizes)]


def setup_line(dataset: CocoDetection, anchors: AnchorGenerator, assigner, geometry: Geometry,
               max_images: int = SETUP_IMAGES) -> tuple[float, str]:
    """``retina train``'s set-up check: the ceiling of the training boxes, as one line."""
    c = measure_split(dataset, anchors, assigner, geometry, max_images)
    sampled = (f"{c.images} of {c.of_images} training images" if c.images < c.of_images
               else f"{c.of_images} training images")
    line = (f"recall ceiling {c.value:.3f}: {c.positive.sum()} of {len(c.positive)} boxes "
            f"({sampled}, input {geometry.describe()}) get a positive anchor from "
            f"{type(assigner).__name__} by its own rule")
    if c.value < WARN_BELOW:
        unreachable = len(c.positive) - int(c.positive.sum())
        line += (f"; {unreachable} can never be learned: `retina check` with this run's "
                 "options says why and what to change")
    return c.value, line


# ---------------------------------------------------------------- suggestions


def _anchors_with(cfg: DictConfig, **changes) -> AnchorGenerator:
    return instantiate(OmegaConf.merge(cfg.model.detector.anchors, changes))


def suggest(cfg: DictConfig, dataset: CocoDetection, anchors: AnchorGenerator, assigner,
            geometry: Geometry, base: float, max_images: int | None) -> list[dict]:
    """Changes to the input size, the tile size and the anchor sizes, each with the ceiling
    it gives the training boxes (computed, not guessed); those that lift it, best first."""
    found = []
    images = image_boxes(dataset, geometry, max_images)

    def add(what: str, ceiling: Ceiling, overrides: list[str] | None = None,
            command: str | None = None) -> None:
        if ceiling.value >= base + MIN_GAIN:
            found.append({"what": what, "ceiling": round(ceiling.value, 4),
                          "overrides": overrides, "command": command,
                          "change": command or " ".join(overrides or [])})

    for factor in (1.5, 2.0):  # a larger input: every box grows, the anchors stay
        bigger = geometry.scaled(factor)
        if bigger.side and bigger.side != geometry.side:
            reach = Reach(anchors, assigner, bigger.size_divisible)
            add(f"input x{factor:g} ({bigger.describe()})",
                reach.measure(image_boxes(dataset, bigger, max_images), len(dataset)),
                overrides=bigger.overrides().split())
    long_sides = dataset.sizes.max(axis=1) if len(dataset) else np.zeros(0)
    tile = geometry.side
    if tile and len(long_sides) and np.median(long_sides) > 1.25 * tile:
        # the images are shrunk to the input: tiles of the input's side keep their pixels
        tiles = tile_boxes(dataset, geometry, tile, max_images)
        add(f"{tile}-px tiles at the images' own resolution",
            Reach(anchors, assigner, geometry.size_divisible).measure(tiles, len(tiles)),
            command=f"retina tile format=coco ann={dataset.ann_file} images="
                    f"{dataset.image_dir} out=tiles tile={tile} overlap=0.25, then train on "
                    "data.train_ann=tiles/annotations.json data.train_images=tiles/images "
                    f"and predict with tile={tile}")
    scale = float(cfg.model.detector.anchors.anchor_scale)
    for factor in (0.5, 0.25, 2.0):  # smaller (or larger) anchors at every level
        changed = _anchors_with(cfg, anchor_scale=scale * factor)
        sides = [round(s) for s in changed.sizes]
        add(f"anchors x{factor:g} (P3-P7 from {sides[0]} to {sides[-1]} px)",
            Reach(changed, assigner, geometry.size_divisible).measure(images, len(dataset)),
            overrides=[f"model.detector.anchors.anchor_scale={scale * factor:g}"])
    return sorted(found, key=lambda s: -s["ceiling"])


# ---------------------------------------------------------------- retina check


def check_data(cfg: DictConfig) -> tuple[dict, dict[str, Ceiling]]:
    """Everything ``retina check`` reports: the dict written to ``check.json``, and the
    :class:`Ceiling` of each split (box by box, for the figure)."""
    opts = cfg.get("check") or {}
    max_images = opts.get("max_images")
    data = OmegaConf.merge(cfg.data, {"num_workers": 0, "skip_bad": True})  # count, not stop
    datamodule = instantiate(data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    splits = {"train": datamodule.train_dataset, "val": datamodule.val_dataset}
    geometry = Geometry.of(cfg.data)
    anchors = instantiate(cfg.model.detector.anchors)
    assigner = instantiate(cfg.loss.assigner)
    names = datamodule.class_names
    ceilings: dict[str, Ceiling] = {}
    report: dict = {"recipe": recipe_line(),
                    "input": {"geometry": geometry.describe(), **geometry.__dict__},
                    "anchors": describe_anchors(anchors), "anchor_ratios": list(anchors.ratios),
                    "assigner": describe_assigner(assigner), "splits": {}}
    for name, dataset in splits.items():
        counts = count_split(name, dataset.ann_file).to_dict()
        counts["skipped_bad"] = dataset.report.skipped
        counts["skipped_examples"] = dataset.report.errors
        ceilings[name] = measure_split(dataset, anchors, assigner, geometry, max_images)
        report["splits"][name] = {**counts, "ceiling": ceilings[name].to_dict(names)}
    if opts.get("duplicates", True):
        files = [ds.image_dir / f for ds in splits.values() for f in ds.file_names]
        groups = duplicate_files(files)
        train_files = {splits["train"].image_dir / f for f in splits["train"].file_names}
        report["duplicates"] = [[str(p) for p in g] for g in groups]
        report["duplicates_across_splits"] = sum(
            1 for g in groups if any(p in train_files for p in g)
            and any(p not in train_files for p in g))
    base = ceilings["train"].value
    report["ceiling"] = round(base, 4)
    report["suggestions"] = (suggest(cfg, splits["train"], anchors, assigner, geometry, base,
                                     max_images) if opts.get("suggest", True) else [])
    report["warnings"] = warnings_of(report)
    return report, ceilings


def warnings_of(report: dict) -> list[str]:
    out = []
    train = report["splits"]["train"]
    if report["ceiling"] < WARN_BELOW:
        c = train["ceiling"]
        text = (f"recall ceiling {c['ceiling']:.3f} < {WARN_BELOW}: {c['boxes'] - c['positive']} "
                f"of {c['boxes']} training boxes can never be learned with these anchors at "
                "this input size")
        if report["suggestions"]:
            best = report["suggestions"][0]
            how = " ".join(best["overrides"]) if best["overrides"] else "see the suggestions"
            text += f"; best: {best['what']} ({how}): ceiling {best['ceiling']:.3f}"
        out.append(text)
    for name, split in report["splits"].items():
        for key, what in (("degenerate", "degenerate boxes (dropped)"),
                          ("outside", "boxes crossing the image border (clipped)"),
                          ("skipped_bad", "bad images or annotations")):
            if split.get(key):
                out.append(f"{name}: {split[key]} {what}")
        if split["ceiling"]["vanished"]:
            out.append(f"{name}: {split['ceiling']['vanished']} boxes under a pixel at the "
                       "input size (dropped by training)")
    if report.get("duplicates"):
        out.append(f"{len(report['duplicates'])} groups of identical image files, "
                   f"{report['duplicates_across_splits']} across train and val")
    return out


def side_range(lo: float, hi: float | None) -> str:
    """``16-32 px``, or ``512+ px`` without an upper end."""
    return f"{lo}-{hi} px" if hi is not None else f"{lo}+ px"


def summary(report: dict) -> str:
    """The report as text (what ``retina check`` prints)."""
    lines = [report["recipe"], f"input: {report['input']['geometry']}",
             "anchors: " + ", ".join(f"{a['level']} {'/'.join(f'{s:g}' for s in a['sides_px'])}"
                                     for a in report["anchors"])
             + f" px, ratios {report['anchor_ratios']}", f"assigner: {report['assigner']}", ""]
    for name, split in report["splits"].items():
        c = split["ceiling"]
        classes = ", ".join(f"{k} {v}" for k, v in list(split["per_class"].items())[:10])
        more = len(split["per_class"]) - 10
        lines += [
            f"{name}: {split['images']} images, {split['annotations']} annotations "
            f"({classes}{f', +{more} classes' if more > 0 else ''}); {split['without_boxes']} "
            f"images without boxes, {split['crowd']} crowd, {split['degenerate']} degenerate, "
            f"{split['outside']} outside the image",
            f"  recall ceiling {c['ceiling']:.3f} ({c['positive']} of {c['boxes']} boxes, "
            f"{c['images_measured']} of {c['images']} images); box side at input "
            f"{c['box_side_px']['min']}-{c['box_side_px']['max']} px, median "
            f"{c['box_side_px']['median']}",
            "  by size: " + ", ".join(
                f"{side_range(*s['side_px'])} {s['ceiling']:.2f} ({s['boxes']})"
                for s in c["per_size"]),
        ]
        if len(c["per_class"]) > 1:
            worst = sorted(c["per_class"].items(), key=lambda kv: kv[1]["ceiling"])[:5]
            lines.append("  lowest by class: " + ", ".join(
                f"{k} {v['ceiling']:.2f} ({v['boxes']})" for k, v in worst))
    if "duplicates" in report:
        lines.append(f"duplicates: {len(report['duplicates'])} groups of identical files "
                     f"({report['duplicates_across_splits']} across train and val)")
    lines.append("")
    if report["suggestions"]:
        lines.append("suggestions (the training ceiling each gives):")
        lines += [f"  {s['ceiling']:.3f}  {s['what']}: {s['change']}"
                  for s in report["suggestions"]]
    else:
        lines.append("suggestions: none lifts the ceiling (input x1.5/x2, tiles, anchors "
                     "x0.5/x0.25/x2 were measured)")
    return "\n".join(lines)


def run_check(cfg: DictConfig) -> dict:
    """``retina check``: measure, print, write ``check.json`` and ``check.png`` into
    ``check.out`` (default: the run directory); returns the report."""
    from retina.training.check_plot import plot_check

    report, ceilings = check_data(cfg)
    out = Path(OmegaConf.select(cfg, "check.out") or cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "check.json").write_text(json.dumps(report, indent=2))
    plot_check(report, ceilings, out / "check.png")
    print(summary(report))
    for warning in report["warnings"]:
        log.warning("%s", warning)
    print(f"wrote {out / 'check.json'} and {out / 'check.png'}")
    return report

