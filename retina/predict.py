"""Run a model over image files: ``retina predict model=FILE images=DIR_OR_GLOB out=DIR``
(``python -m retina.predict``).

``model`` is any export (``.safetensors``/``.json``, TorchScript ``.pt``, ``.onnx``) or a
``retina.train`` checkpoint (``.ckpt``). Writes into ``out``:

- ``results.json``: COCO results (``image_id``, ``category_id`` of the training dataset,
  ``bbox`` x y w h in image pixels, ``score``);
- ``images.json``: ``{file name: image id}`` (ids 1..N in file order, or taken from
  ``ann=COCO_FILE`` by file name, so that the results can be evaluated against it);
- with ``draw=true``, ``drawn/<name>.png``: boxes scoring >= ``draw_conf`` (default
  ``conf``) with class names and scores;
- for a georeferenced image (a GeoTIFF, with ``rasterio`` installed: ``pip install
  'retina-det[geo]'``), ``geojson/<name>.geojson``: the boxes as polygons in the image's CRS
  with score, label and class name (``retina.infer.geo``).

With ``tile=N`` each image is a scene predicted window by window at native scale
(``predict_large``: N-px windows overlapping by ``overlap``, merged across seams by
``merge``, read by windows, see ``retina.infer.sliced``; ``full_pass=true`` adds the whole
scene resized to the model input); otherwise each image is resized to the model input.
``tta=flip`` predicts each image (or window) and its horizontal flip (``retina.infer.tta``).

A checkpoint or safetensors model runs in ``runtime`` (default ``auto``: ONNX Runtime
through a graph cached beside the model when installed, see ``retina.infer.runtimes``;
one log line names it). ``devices=N`` / ``num_nodes=M`` share the files among N processes
per machine on M machines (``retina.infer.distributed``), gathered into one
``results.json``.

Results keep the detections scoring at least ``conf`` (the NMS at ``iou``, at most
``max_det`` per image or scene, only ``classes``; see :class:`retina.options.PredictOptions`).
Options are ``key=value``, checked before anything runs (:mod:`retina.cli`).
"""

from __future__ import annotations

import glob
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.utils import draw_bounding_boxes
from tqdm import tqdm

from retina.cli import COMMANDS, key_value_command, parse_options, suggest, torch_device
from retina.data.coco import load_coco, read_rgb
from retina.data.scene import georeference, open_scene
from retina.infer.geo import to_geojson, write_geojson
from retina.options import PredictOptions
from retina.training.coco_eval import to_coco_results

log = logging.getLogger(__name__)


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


def resized(predictor, files: list[Path], cfg: PredictOptions) -> Iterator[tuple]:
    """``(index, image, detections)`` per file, ``batch_size`` images per call, each resized
    to the model input; ``(index, None, None)`` for a file that is not an image."""
    for start in range(0, len(files), cfg.batch_size):
        chunk = range(start, min(start + cfg.batch_size, len(files)))
        images = {i: im for i in chunk if (im := read_image(files[i])) is not None}
        dets = dict(zip(images, predictor(list(images.values())))) if images else {}
        for i in chunk:
            yield i, images.get(i), dets.get(i)


def sliced(predictor, files: list[Path], cfg: PredictOptions) -> Iterator[tuple]:
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
                                          cfg.merge, progress=cfg.progress,
                                          full_pass=cfg.full_pass)
            image = scene.read((0, 0, scene.width, scene.height)) if cfg.draw else None
        yield i, image, det


def class_labels(wanted: list | None, names: list[str], cat_ids: list[int]) -> set[int] | None:
    """The labels (0..K-1) of ``classes=``: each entry a class name or a dataset category id.

    Raises:
        ValueError: an entry that is neither, naming it with the nearest class name.
    """
    if wanted is None:
        return None
    labels = set()
    for item in wanted:
        text = str(item)
        if text in names:
            labels.add(names.index(text))
        elif text.lstrip("-").isdigit() and int(text) in cat_ids:
            labels.add(cat_ids.index(int(text)))
        else:
            raise ValueError(f"classes: {text!r} is not a class of this model{suggest(text, names)};"
                             f" its classes: {', '.join(names)} (or their ids "
                             f"{', '.join(map(str, cat_ids))})")
    return labels


def selected(det: dict[str, Tensor], labels: set[int] | None, max_det: int | None
             ) -> dict[str, Tensor]:
    """``det`` with only the given labels, and at most ``max_det`` boxes (by score)."""
    if labels is not None:
        keep = torch.isin(det["labels"], torch.tensor(sorted(labels), dtype=det["labels"].dtype))
        det = {k: v[keep] for k, v in det.items()}
    return {k: v[:max_det] for k, v in det.items()} if max_det else det


def load_predictor(cfg: PredictOptions, device: str | torch.device):
    """The model of ``cfg`` in its runtime, with its postprocess set and ``tta``."""
    from retina.infer import load
    from retina.infer.tta import FlipTTA

    predictor = load(cfg.model, device=device, runtime=cfg.runtime)
    # sliced: max_det caps the whole scene; each window keeps the model's own
    predictor.set_postprocess(score_thresh=cfg.conf, nms_thresh=cfg.iou,
                              max_det=None if cfg.tile else cfg.max_det)
    return FlipTTA(predictor, cfg.merge) if cfg.tta == "flip" else predictor


def check_combinations(cfg: PredictOptions) -> None:
    """Options that do not go together, one line each (before anything is read)."""
    if cfg.full_pass and not cfg.tile:
        raise ValueError("full_pass=true adds a pass beside the windows of sliced prediction: "
                         "add tile=N (or leave full_pass out: without tile every image is "
                         "predicted whole)")
    if (cfg.devices > 1 or cfg.num_nodes > 1) and ":" in cfg.device:
        raise ValueError(f"devices={cfg.devices} with device={cfg.device}: the processes take "
                         "a device each; give device=cuda (or device=cpu)")


class FileWork:
    """Predicts some of the files and writes what belongs to each (drawn/, geojson/);
    returns per file its COCO results, or None for a file that is not an image."""

    def __init__(self, cfg: PredictOptions, predictor, files: list[Path], names: list[str],
                 ids: dict[str, int], labels: set[int] | None, out: Path) -> None:
        self.cfg, self.predictor, self.files, self.names = cfg, predictor, files, names
        self.ids, self.labels, self.out = ids, labels, out

    def __call__(self, indices: list[int], bar: tqdm | None = None) -> list[list[dict] | None]:
        cfg, predictor, out = self.cfg, self.predictor, self.out
        records: list[list[dict] | None] = []
        mine = [self.files[i] for i in indices]
        for k, image, det in (sliced if cfg.tile else resized)(predictor, mine, cfg):
            if bar is not None:
                bar.update(1)
            if det is None:
                records.append(None)
                continue
            i = indices[k]
            name = self.names[i]
            det = selected({n: v.cpu() for n, v in det.items()}, self.labels, cfg.max_det)
            records.append(to_coco_results([self.ids[name]], [det], predictor.cat_ids))
            stem = name.replace("/", "__").rsplit(".", 1)[0]
            if cfg.draw:
                drawn = draw(image, det, predictor.class_names, cfg.draw_conf or cfg.conf)
                (out / "drawn").mkdir(exist_ok=True)
                Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(out / "drawn" / f"{stem}.png")
            if geo := georeference(self.files[i]):
                write_geojson(out / "geojson" / f"{stem}.geojson",
                              to_geojson(det, *geo, predictor.class_names, predictor.cat_ids))
        return records


def predict(cfg: PredictOptions) -> dict[str, int] | None:
    """Run ``cfg.model`` over ``cfg.images`` and write the files of the module docstring.

    Returns:
        ``images`` read, ``skipped`` files, ``detections`` written (None on the processes
        other than the first with ``devices`` / ``num_nodes``: the first writes the results).
    """
    check_combinations(cfg)
    shared = cfg.devices > 1 or cfg.num_nodes > 1
    files, root = find_files(cfg.images)
    device = torch.device(torch_device(cfg.device))
    # shared among processes on GPUs: each loads its own on its own GPU (this one: classes)
    predictor = load_predictor(cfg, "cpu" if shared else device)
    labels = class_labels(cfg.classes, predictor.class_names, predictor.cat_ids)
    names = [p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name for p in files]
    ids = image_ids_from(cfg.ann, names) if cfg.ann else {n: i + 1 for i, n in enumerate(names)}
    out = Path(cfg.out)
    if out.is_file():
        raise ValueError(f"out={out} is a file; out= names a folder")
    out.mkdir(parents=True, exist_ok=True)

    if shared:
        from retina.cli import lightning_device
        from retina.infer.distributed import predict_shared

        def make_work(rank_device: torch.device) -> FileWork:
            here = predictor if rank_device.type == "cpu" else load_predictor(cfg, rank_device)
            return FileWork(cfg, here, files, names, ids, labels, out)

        accelerator, _ = lightning_device(device.type)
        records = predict_shared(make_work, len(files), 1 if cfg.tile else cfg.batch_size,
                                 accelerator, cfg.devices, cfg.num_nodes)
        if records is None:  # not the first process
            return None
    else:
        bar = tqdm(total=len(files), unit="img", disable=not cfg.progress, desc="predict")
        records = FileWork(cfg, predictor, files, names, ids, labels, out)(
            list(range(len(files))), bar)
        bar.close()
    results = [r for rec in records if rec is not None for r in rec]
    mapping = {names[i]: ids[names[i]] for i, rec in enumerate(records) if rec is not None}
    (out / "results.json").write_text(json.dumps(results))
    (out / "images.json").write_text(json.dumps(mapping, indent=1))
    summary = {"images": len(mapping), "skipped": len(files) - len(mapping),
               "detections": len(results)}
    log.info("%s -> %s", summary, out)
    return summary


def parse(argv: list[str]) -> PredictOptions:
    """``key=value`` arguments over the defaults of :class:`PredictOptions`."""
    return parse_options(PredictOptions, argv, COMMANDS["predict"].example)


def task(opts: PredictOptions) -> None:
    summary = predict(opts)
    if summary is not None:
        print(json.dumps(summary))


main = key_value_command("predict", task)


if __name__ == "__main__":
    sys.exit(main())
