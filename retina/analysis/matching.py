"""Which detection COCOeval matched to which ground-truth box, at one IoU threshold.

Read from the evaluator's own per-image records (``ev.evalImgs``, area "all"), so the
report's true and false positives are exactly those behind its AP. Detection ids are
COCOeval's (result ``i`` is id ``i + 1``, see :func:`retina.training.coco_eval.run_cocoeval`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools.cocoeval import COCOeval

from retina.training.coco_eval import iou_index


@dataclass
class Matching:
    """COCOeval's matches at one IoU threshold, over the images and categories it evaluated.

    Attributes:
        det_gt: detection id -> matched ground-truth id, 0 for a false positive; every
            detection the evaluator scored (the best 100 per image and category), except
            those it ignores (matched to a crowd box).
        gt_det: ground-truth id -> matching detection id, 0 for a miss; every box the
            evaluator counts (crowd boxes left out).
        ignored: detection ids the evaluator ignores.
    """

    det_gt: dict[int, int] = field(default_factory=dict)
    gt_det: dict[int, int] = field(default_factory=dict)
    ignored: set[int] = field(default_factory=set)

    @property
    def evaluated(self) -> set[int]:
        """Every detection id the evaluator looked at (counted or ignored)."""
        return set(self.det_gt) | self.ignored


def match(ev: COCOeval, iou: float = 0.5) -> Matching:
    """COCOeval's matching of an evaluated ``ev`` at the threshold ``iou`` (one of its
    ``params.iouThrs``), area "all", 100 detections per image.

    Raises:
        TypeError: ``ev`` is not pycocotools' (faster-coco-eval keeps no ``evalImgs``).
    """
    if not isinstance(ev, COCOeval):
        raise TypeError(f"matching reads pycocotools' per-image records (evalImgs), which "
                        f"{type(ev).__name__} does not keep: run_cocoeval(..., "
                        "backend='pycocotools')")
    t = iou_index(ev, iou)
    all_area = ev.params.areaRng[ev.params.areaRngLbl.index("all")]
    out = Matching()
    for e in ev.evalImgs:
        if e is None or list(e["aRng"]) != list(all_area):
            continue
        for det, gt, ignore in zip(e["dtIds"], e["dtMatches"][t], e["dtIgnore"][t]):
            if ignore:
                out.ignored.add(int(det))
            else:
                out.det_gt[int(det)] = int(gt)
        for gt, det, ignore in zip(e["gtIds"], e["gtMatches"][t], np.asarray(e["gtIgnore"])):
            if not ignore:
                out.gt_det[int(gt)] = int(det)
    return out
