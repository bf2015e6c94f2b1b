"""Whole-scene benchmark: a NEON model on the whole YELL ``crop`` scene, resized vs sliced.

The validation scene (1249 x 1035 px, 279 trees, from the deepforest wheel) is predicted
in one call per method, and scored against its full annotation with pycocotools:

- ``resize``: the scene resized to the network input, as ``retina.predict`` does for any
  image (``max_det`` raised to the scene's limit, so that it is not the cap);
- ``sliced tile=N``: ``predict_large`` with N-px windows at native scale.

Two sets of numbers: COCO's (at most 100 detections per image: ``mAP``, ``mAP_50``,
``AR_100``; with 279 trees in one image, recall cannot pass 100 / 279), and the same with
``max_dets`` detections per scene (``scene_mAP``, ``scene_mAP_50``, ``scene_AR``). Seconds
per megapixel cover reading the scene and predicting it.

Every method runs in each of ``runtimes`` (``retina.infer.runtimes``: ``eager``, ``auto``,
``onnx``, ``openvino``; a graph file runs in its own), the model loaded and warmed up
(its graph exported or read from the cache) before the clock starts; each row gets its
``s_per_megapixel`` over the eager row's of the same method (``vs_eager``).
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import torch
from pycocotools.coco import COCO
from torchvision.utils import draw_bounding_boxes

from retina.data.coco import read_rgb
from retina.data.neon import CATEGORY, SPLITS, deepforest_data_dir, scene_record
from retina.data.validate import Report, records_to_coco
from retina.export.formats import KIND_OF_SUFFIX
from retina.infer import load
from retina.training.coco_eval import at_max_dets, run_cocoeval, summarize, to_coco_results

SCENE = SPLITS["val"][0]  # 2019_YELL_2_541000_4977000_image_crop, 279 trees


def scene_ground_truth() -> tuple[COCO, str]:
    """The whole scene's boxes as a one-image COCO (image id 1, category 1 "Tree")."""
    src = deepforest_data_dir()
    coco = COCO()
    coco.dataset = records_to_coco([scene_record(SCENE, src)], [dict(CATEGORY)], Report("scene"))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, str(src / f"{SCENE.stem}.png")


def score(gt: COCO, det: dict, cat_ids: list[int], max_dets: int) -> dict[str, float]:
    """COCO's mAP, mAP_50, AR_100, and mAP, mAP_50, AR at ``max_dets`` detections."""
    results = to_coco_results([1], [det], cat_ids)
    coco, _ = summarize(run_cocoeval(gt, results))
    scene = at_max_dets(gt, results, None, max_dets)
    return {"mAP": coco["mAP"], "mAP_50": coco["mAP_50"], "AR_100": coco["AR_100"],
            "scene_mAP": scene[f"mAP_{max_dets}"], "scene_mAP_50": scene[f"mAP_50_{max_dets}"],
            "scene_AR": scene[f"AR_{max_dets}"], "detections": len(results)}


def default_runtimes(model: str | Path) -> list[str]:
    """``eager`` and ``auto`` for a checkpoint or safetensors model, ``auto`` for a graph."""
    kind = KIND_OF_SUFFIX.get(Path(model).suffix.lower())
    return ["eager", "auto"] if kind in ("checkpoint", "safetensors") else ["auto"]


def scene_bench(model: str, tiles: list[int], overlap: float = 0.25, batch_size: int = 4,
                max_dets: int = 1000, draw: str | None = None, draw_thresh: float = 0.3,
                runtimes: list[str] | None = None, tta: str | None = None,
                full_pass: bool = False) -> dict:
    """Resize-to-input and sliced prediction of the YELL ``crop`` scene, scored and timed, in
    each runtime.

    Args:
        model: any file ``retina.load`` reads.
        tiles: window sides of the sliced runs.
        overlap: of the sliced runs.
        batch_size: windows per network call.
        max_dets: detections per scene of the ``scene_*`` numbers.
        draw: write a PNG of the scene: resized (left) and the first sliced run (right) of
            the first runtime, boxes scoring >= ``draw_thresh``, at 0.4 of the size.
        runtimes: see the module docstring (default :func:`default_runtimes`).
        tta: ``"flip"``: every method with test-time flip (``retina.infer.tta``).
        full_pass: the sliced runs add a full pass (``retina.infer.sliced``).

    Returns:
        the report: ``results`` by row name (``"sliced tile=400 [auto]"``).
    """
    from retina.infer.tta import FlipTTA

    gt, path = scene_ground_truth()
    megapixels = gt.imgs[1]["width"] * gt.imgs[1]["height"] / 1e6
    runtimes = runtimes or default_runtimes(model)
    rows, drawn = {}, {}

    def timed(name: str, run, cat_ids: list[int]) -> None:
        start = time.perf_counter()
        det = {k: v.cpu() for k, v in run().items()}
        seconds = time.perf_counter() - start
        rows[name] = {**score(gt, det, cat_ids, max_dets),
                      "seconds": seconds, "s_per_megapixel": seconds / megapixels}
        method = name.rsplit(" [", 1)[0]
        if f"{method} [eager]" in rows:
            rows[name]["vs_eager"] = seconds / rows[f"{method} [eager]"]["seconds"]
        drawn.setdefault(method, det)
        print(f"{name:<28}" + "".join(f"{k} {v:.3f}  " for k, v in rows[name].items()),
              flush=True)

    for runtime in runtimes:
        predictor = load(model, runtime=runtime)
        predictor = FlipTTA(predictor) if tta == "flip" else predictor
        max_det = predictor.meta.model["postprocess"]["max_det"]
        try:  # resize: lift the per-image cap (a graph file keeps the one it was exported with)
            predictor.set_postprocess(max_det=max_dets)
        except ValueError as err:
            print(f"resize [{runtime}]: {err}", flush=True)
        corner = read_rgb(path)[:, :64, :64]
        predictor([corner])  # warm-up: a cached graph is exported or read now
        timed(f"resize [{runtime}]", lambda: predictor([read_rgb(path)])[0], predictor.cat_ids)
        predictor.set_postprocess(max_det=max_det)
        predictor([corner])  # warm-up again: the graph of the model's max_det
        for tile in tiles:
            timed(f"sliced tile={tile} [{runtime}]", lambda: predictor.predict_large(
                path, tile=tile, overlap=overlap, batch_size=batch_size, full_pass=full_pass),
                predictor.cat_ids)
    report = {"scene": SCENE.stem, "megapixels": megapixels, "trees": len(gt.anns),
              "overlap": overlap, "max_dets": max_dets, "model": str(model),
              "runtimes": runtimes, "batch": batch_size, "tta": tta, "full_pass": full_pass,
              "results": rows}
    if draw:
        image = read_rgb(path)
        boxes = [d["boxes"][d["scores"] >= draw_thresh]
                 for d in (drawn["resize"], drawn[f"sliced tile={tiles[0]}"])]
        panels = [draw_bounding_boxes(image, b, colors="yellow", width=2) if len(b) else image
                  for b in boxes]
        picture = torch.cat([panels[0], torch.full((3, image.shape[1], 8), 255,
                                                   dtype=torch.uint8), panels[1]], dim=2)
        save_small(picture, draw)
        report["picture"] = draw
    return report


def save_small(image: torch.Tensor, path: str, scale: float = 0.4, colors: int = 32) -> None:
    """(3, H, W) uint8 as a PNG at ``scale``, with a palette of ``colors`` (a small file)."""
    from PIL import Image

    picture = Image.fromarray(image.permute(1, 2, 0).numpy())  # (H, W, 3)
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                             Image.Resampling.LANCZOS)
    picture.quantize(colors).save(path, optimize=True)
