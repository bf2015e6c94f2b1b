"""Run a model over image files: ``retina predict model=FILE images=DIR_OR_GLOB out=DIR``
(``python -m retina.predict``).

``model`` is any export (``.safetensors``/``.json``, TorchScript ``.pt``, ``.onnx``) or a
``retina.train`` checkpoint (``.ckpt``). Writes into ``out``:

- ``results.json``: COCO results (``image_id``, ``category_id`` of the training dataset,
  ``bbox`` x y w h in image pixels, ``score``);
- ``images.json``: ``{file name: image id}`` (ids 1..N in file order, or taken from
  ``ann=COCO_FILE`` by file name, so that the results can be evaluated against it);
- with ``draw=true``, ``drawn/<name>.png``: boxes scoring >= ``draw_thresh`` with class
  names and scores;
- for a georeferenced image (a GeoTIFF, with ``rasterio`` installed: ``pip install
  'retina-det[geo]'``), ``geojson/<name>.geojson``: the boxes as polygons in the image's CRS
  with score, label and class name (``retina.infer.geo``).

With ``tile=N`` each image is a scene predicted window by window at native scale
(``predict_large``: N-px windows overlapping by ``overlap``, merged across seams by
``merge``, read by windows, see ``retina.infer.sliced``); otherwise each image is resized
to the model input.

Options are ``key=value`` like the Hydra commands, parsed with OmegaConf (not Hydra:
``model=`` would select the training config group ``model``); see :mod:`retina.cli`.
"""

from __future__ import annotations

import glob
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.utils import draw_bounding_boxes
from tqdm import tqdm

from retina.cli import COMMANDS, USAGE_ERROR, parse_options, print_usage, wants_help
from retina.data.coco import load_coco, read_rgb
from retina.data.scene import georeference, open_scene
from retina.infer.geo import to_geojson, write_geojson
from retina.training.coco_eval import to_coco_results

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """Options of ``retina.predict`` (all ``key=value`` on the command line)."""

    model: str = MISSING  # export or checkpoint file
    images: str = MISSING  # a folder (every file in it), a glob pattern or one file
    out: str = MISSING  # output folder
    draw: bool = False  # also write drawn images
    batch_size: int = 4  # images per network call (sliced: windows)
    draw_thresh: float = 0.3  # drawn boxes: score >= this
    ann: str | None = None  # COCO file to take image ids from (by file_name)
    device: str = "cpu"  # eager formats only
    progress: bool = True
    tile: int | None = None  # sliced prediction: window side in image pixels (null: resize)
    overlap: float = 0.25  # sliced: fraction of a window shared with each neighbour
    merge: str = "nms"  # sliced: nms | fusion (score-weighted fusion of duplicate boxes)


def find_files(spec: str) -> tuple[list[Path], Path]:
    """Files named by a folder, glob pattern or path, sorted, and the folder names are
    relative to."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), path
    if path.is_file():
        return [path], path.parent
    files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"images={spec}: no such folder or file, and no file matches")
    first_magic = next(i for i, part in enumerate(path.parts) if glob.has_magic(part))
    fixed = path.parts[:first_magic]  # the folder part of the pattern
    return files, Path(*fixed) if fixed else Path(".")


def read_image(path: Path) -> Tensor | None:
    """(3, H, W) uint8 RGB, or None (with a warning naming the file) if not an image."""
    try:
        return read_rgb(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        log.warning("skipping %s: not a readable image (%s)", path, err)
        return None


def draw(image: Tensor, det: dict[str, Tensor], names: list[str], thresh: float) -> Tensor:
    """(3, H, W) uint8 with boxes scoring >= ``thresh`` and "name score" labels."""
    keep = det["scores"] >= thresh
    if not keep.any():
        return image
    boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
    text = [f"{names[int(c)]} {float(s):.2f}" for c, s in zip(labels, scores)]
    width = max(1, round(max(image.shape[-2:]) / 400))
    return draw_bounding_boxes(image, boxes, labels=text, colors="yellow", width=width)


def image_ids_from(ann: str | Path, names: list[str]) -> dict[str, int]:
    """``{name: id}`` from a COCO file, matching ``file_name`` or its base name."""
    coco = load_coco(ann)
    by_name = {}
    for im in coco.imgs.values():
        by_name[im["file_name"]] = im["id"]
        by_name.setdefault(Path(im["file_name"]).name, im["id"])
    unknown = [n for n in names if n not in by_name and Path(n).name not in by_name]
    if unknown:
        raise ValueError(f"{ann} has no image named {', '.join(unknown[:5])}")
    return {n: by_name.get(n, by_name.get(Path(n).name)) for n in names}


def resized(predictor, files: list[Path], cfg: PredictConfig) -> Iterator[tuple]:
    """``(index, image, detections)`` per file, ``batch_size`` images per call, each resized
    to the model input; ``(index, None, None)`` for a file that is not an image."""
    for start in range(0, len(files), cfg.batch_size):
        chunk = range(start, min(start + cfg.batch_size, len(files)))
        images = {i: im for i in chunk if (im := read_image(files[i])) is not None}
        dets = dict(zip(images, predictor(list(images.values())))) if images else {}
        for i in chunk:
            yield i, images.get(i), dets.get(i)


def sliced(predictor, files: list[Path], cfg: PredictConfig) -> Iterator[tuple]:
    """Like :func:`resized`, each file predicted window by window (``predict_large``); the
    image is read whole only to be drawn."""
    for i, path in enumerate(files):
        try:
            scene = open_scene(path)
        except ValueError as err:
            log.warning("skipping %s: %s", path, err)
            yield i, None, None
            continue
        with scene:
            det = predictor.predict_large(scene, cfg.tile, cfg.overlap, cfg.batch_size,
                                          cfg.merge, progress=cfg.progress)
            image = scene.read((0, 0, scene.width, scene.height)) if cfg.draw else None
        yield i, image, det


def predict(cfg: PredictConfig) -> dict[str, int]:
    """Run ``cfg.model`` over ``cfg.images`` and write the files of the module docstring.

    Returns:
        ``images`` read, ``skipped`` files, ``detections`` written.
    """
    from retina.infer import load

    predictor = load(cfg.model, device=cfg.device)
    files, root = find_files(cfg.images)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name for p in files]
    ids = image_ids_from(cfg.ann, names) if cfg.ann else {n: i + 1 for i, n in enumerate(names)}

    results, mapping, skipped = [], {}, 0
    bar = tqdm(total=len(files), unit="img", disable=not cfg.progress, desc="predict")
    for i, image, det in (sliced if cfg.tile else resized)(predictor, files, cfg):
        bar.update(1)
        if det is None:
            skipped += 1
            continue
        name, det = names[i], {k: v.cpu() for k, v in det.items()}
        results += to_coco_results([ids[name]], [det], predictor.cat_ids)
        mapping[name] = ids[name]
        stem = name.replace("/", "__").rsplit(".", 1)[0]
        if cfg.draw:
            drawn = draw(image, det, predictor.class_names, cfg.draw_thresh)
            (out / "drawn").mkdir(exist_ok=True)
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(out / "drawn" / f"{stem}.png")
        if geo := georeference(files[i]):
            write_geojson(out / "geojson" / f"{stem}.geojson",
                          to_geojson(det, *geo, predictor.class_names, predictor.cat_ids))
    bar.close()
    (out / "results.json").write_text(json.dumps(results))
    (out / "images.json").write_text(json.dumps(mapping, indent=1))
    summary = {"images": len(mapping), "skipped": skipped, "detections": len(results)}
    log.info("%s -> %s", summary, out)
    return summary


def parse(argv: list[str]) -> PredictConfig:
    """``key=value`` arguments over the defaults of :class:`PredictConfig`."""
    return parse_options(PredictConfig, argv, COMMANDS["predict"].example)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if wants_help(args):
        return print_usage("predict")
    cfg = parse(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = predict(cfg)
    except (ValueError, FileNotFoundError, KeyError) as err:
        msg = str(err).splitlines()[0] if isinstance(err, KeyError) else str(err)
        print(f"error: {msg}", file=sys.stderr)
        return USAGE_ERROR
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
