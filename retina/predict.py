"""Run a model over image files: ``retina predict model=FILE images=DIR_OR_GLOB out=DIR``
(``python -m retina.predict``).

``model`` is any export (``.safetensors``/``.json``, TorchScript ``.pt``, ``.onnx``) or a
``retina.train`` checkpoint (``.ckpt``). Writes into ``out``:

- ``results.json``: COCO results (``image_id``, ``category_id`` of the training dataset,
  ``bbox`` x y w h in image pixels, ``score``);
- ``images.json``: ``{file name: image id}`` (ids 1..N in file order, or taken from
  ``ann=COCO_FILE`` by file name, so that the results can be evaluated against it);
- with ``draw=true``, ``drawn/<name>.png``: boxes scoring >= ``draw_thresh`` with class
  names and scores.

Options are ``key=value`` like the Hydra commands, parsed with OmegaConf (not Hydra:
``model=`` would select the training config group ``model``); see :mod:`retina.cli`.
"""

from __future__ import annotations

import glob
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.utils import draw_bounding_boxes
from tqdm import tqdm

from retina.cli import COMMANDS, USAGE_ERROR, parse_options, print_usage, wants_help
from retina.data.coco import load_coco, read_rgb
from retina.training.coco_eval import to_coco_results

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """Options of ``retina.predict`` (all ``key=value`` on the command line)."""

    model: str = MISSING  # export or checkpoint file
    images: str = MISSING  # a folder (every file in it), a glob pattern or one file
    out: str = MISSING  # output folder
    draw: bool = False  # also write drawn images
    batch_size: int = 4
    draw_thresh: float = 0.3  # drawn boxes: score >= this
    ann: str | None = None  # COCO file to take image ids from (by file_name)
    device: str = "cpu"  # eager formats only
    progress: bool = True


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


def predict(cfg: PredictConfig) -> dict[str, int]:
    """Run ``cfg.model`` over ``cfg.images`` and write the files of the module docstring.

    Returns:
        ``images`` read, ``skipped`` files, ``detections`` written.
    """
    from retina.export import load

    predictor = load(cfg.model, device=cfg.device)
    files, root = find_files(cfg.images)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.draw:
        (out / "drawn").mkdir(exist_ok=True)
    names = [p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name for p in files]
    ids = image_ids_from(cfg.ann, names) if cfg.ann else {n: i + 1 for i, n in enumerate(names)}

    results, mapping, skipped = [], {}, 0
    bar = tqdm(total=len(files), unit="img", disable=not cfg.progress, desc="predict")
    for start in range(0, len(files), cfg.batch_size):
        chunk = range(start, min(start + cfg.batch_size, len(files)))
        batch = [(names[i], im) for i in chunk if (im := read_image(files[i])) is not None]
        bar.update(len(chunk))
        skipped += len(chunk) - len(batch)
        if not batch:
            continue
        dets = [{k: v.cpu() for k, v in d.items()} for d in predictor([im for _, im in batch])]
        results += to_coco_results([ids[n] for n, _ in batch], dets, predictor.cat_ids)
        for (name, image), det in zip(batch, dets):
            mapping[name] = ids[name]
            if cfg.draw:
                drawn = draw(image, det, predictor.class_names, cfg.draw_thresh)
                target = out / "drawn" / (name.replace("/", "__").rsplit(".", 1)[0] + ".png")
                Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(target)  # (H, W, 3)
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
