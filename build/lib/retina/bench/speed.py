"""Speed and memory against torchvision's RetinaNet-R50-FPN, in one process and one run.

Same inputs, same thread count, repeats interleaved (ours, torchvision, ours, ...) after
warm-up, so machine noise cancels in the ratios ours / torchvision.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from functools import partial
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import retinanet_resnet50_fpn

from retina.losses.retinanet import RetinaNetCriterion
from retina.model.anchors import AnchorGenerator
from retina.model.backbone import resnet
from retina.model.detector import Detector
from retina.model.head import RetinaHead
from retina.ops.boxes import DeltaCoder
from retina.ops.levels import flatten_levels
from retina.ops.postprocess import Postprocess

NUM_CLASSES = 91  # torchvision's COCO head


# ----------------------------------------------------------------------------- models
def ours(num_classes: int = NUM_CLASSES, frozen: bool = False) -> tuple[Detector, AnchorGenerator]:
    """Our RetinaNet-R50-FPN in torchvision's random-init setup (BatchNorm, all stages
    trainable, P6 from P5); ``frozen``: the fine-tuning setup (frozen BN, stem frozen)."""
    backbone = resnet(50, weights=None, frozen_bn=frozen, freeze_stages=2 if frozen else 0)
    anchors = AnchorGenerator()
    return Detector(backbone, partial(RetinaHead, num_classes), anchors, p6p7_from="p5"), anchors


def theirs(size: int, num_classes: int = NUM_CLASSES) -> torch.nn.Module:
    """torchvision's RetinaNet-R50-FPN, random init, no resize, same thresholds."""
    return retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes, min_size=size,
        max_size=size, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100,
        topk_candidates=1000,
    )


def random_batch(batch: int, size: int, num_boxes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    xy = torch.rand(batch, num_boxes, 2, generator=g) * size * 0.7
    wh = torch.rand(batch, num_boxes, 2, generator=g) * size * 0.3 + 16
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=-1)  # (B, M, 4)
    labels = torch.randint(0, NUM_CLASSES, (batch, num_boxes), generator=g)
    return images, boxes, labels


# ------------------------------------------------------------------------- measuring
def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict:
    """Median and min milliseconds of each function, run in turn ``repeats`` times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v)} for k, v in times.items()}


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / (best / 1000) / 1e9


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# --------------------------------------------------------------------------- speed
class Bench:
    """The functions timed for one input size."""

    def __init__(self, size: int, batch: int):
        torch.manual_seed(0)
        self.size = size
        self.images, self.boxes, self.labels = random_batch(batch, size)
        self.det, self.gen = ours()
        self.det_frozen, _ = ours(frozen=True)
        self.tv = theirs(size)
        self.crit = RetinaNetCriterion(box_loss="l1")  # torchvision's box loss
        self.pp = Postprocess(DeltaCoder())
        self.sizes = torch.tensor([[size, size]] * batch)
        self.tv_targets = [{"boxes": b, "labels": lab} for b, lab in zip(self.boxes, self.labels)]
        with torch.no_grad():
            self.det.eval()
            self.cls_maps, self.box_maps = self.det(self.images)
        self.anchors = self.gen([m.shape[-2:] for m in self.cls_maps])
        self.level_sizes = [len(a) for a in self.anchors]

    # train step: forward, losses, backward
    def ours_train(self, det: Detector | None = None):
        det = det or self.det
        det.train()
        det.zero_grad(set_to_none=True)
        cls, box = det(self.images)
        anchors = torch.cat(self.gen([m.shape[-2:] for m in cls]))
        losses = self.crit(flatten_levels(cls, NUM_CLASSES), flatten_levels(box, 4), anchors,
                           self.boxes, self.labels)
        (losses["loss_cls"] + losses["loss_box"]).backward()

    def tv_train(self):
        self.tv.train()
        self.tv.zero_grad(set_to_none=True)
        losses = self.tv(list(self.images), self.tv_targets)
        sum(losses.values()).backward()

    # inference: network + postprocess
    @torch.no_grad()
    def ours_infer(self):
        self.det.eval()
        cls, box = self.det(self.images)
        self.pp(cls, box, self.gen([m.shape[-2:] for m in cls]), self.sizes)

    @torch.no_grad()
    def tv_infer(self):
        self.tv.eval()
        self.tv(list(self.images))

    # loss alone: assignment + losses, forward + backward, on fixed head outputs
    def loss_fns(self):
        cls = flatten_levels(self.cls_maps, NUM_CLASSES).requires_grad_()
        box = flatten_levels(self.box_maps, 4).requires_grad_()
        anchors = torch.cat(self.anchors)

        def ours_loss():
            cls.grad = box.grad = None
            losses = self.crit(cls, box, anchors, self.boxes, self.labels)
            (losses["loss_cls"] + losses["loss_box"]).backward()

        def tv_loss():
            cls.grad = box.grad = None
            head = {"cls_logits": cls, "bbox_regression": box}
            losses = self.tv.compute_loss(self.tv_targets, head, [anchors] * len(self.images))
            sum(losses.values()).backward()

        return ours_loss, tv_loss

    # postprocess alone; "saturated": every score above the threshold
    def postprocess_fns(self, saturated: bool):
        g = torch.Generator().manual_seed(1)
        shift = 5.0 if saturated else -6.0
        cls_maps = [torch.randn(m.shape, generator=g) + shift for m in self.cls_maps]
        box_maps = [torch.randn(m.shape, generator=g) * 0.1 for m in self.box_maps]
        split_cls = [flatten_levels([m], NUM_CLASSES) for m in cls_maps]
        split_box = [flatten_levels([m], 4) for m in box_maps]
        batch = len(self.images)
        tv_anchors = [list(self.anchors)] * batch
        image_sizes = [(self.size, self.size)] * batch

        def ours_pp():
            return self.pp(cls_maps, box_maps, self.anchors, self.sizes)

        def tv_pp():
            head = {"cls_logits": split_cls, "bbox_regression": split_box}
            return self.tv.postprocess_detections(head, tv_anchors, image_sizes)

        return ours_pp, tv_pp


def peak_rss_train_mb(which: str, size: int, batch: int) -> float:
    """Peak RSS of a fresh process doing two train steps (one model, nothing else loaded)."""
    code = (
        "from retina.bench.speed import _peak_child;"
        f"_peak_child({which!r}, {size}, {batch})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _peak_child(which: str, size: int, batch: int) -> None:
    images, boxes, labels = random_batch(batch, size)
    if which == "torchvision":
        model = theirs(size).train()
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
        step = lambda: sum(model(list(images), targets).values()).backward()  # noqa: E731
    else:
        det, gen = ours(frozen=which == "ours_frozen_bn")
        det.train()
        crit = RetinaNetCriterion(box_loss="l1")

        def step():
            cls, box = det(images)
            anchors = torch.cat(gen([m.shape[-2:] for m in cls]))
            losses = crit(flatten_levels(cls, NUM_CLASSES), flatten_levels(box, 4), anchors, boxes, labels)
            (losses["loss_cls"] + losses["loss_box"]).backward()

    for _ in range(2):
        step()
    print(peak_rss_mb())


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over from the parent through fork and exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed(sizes: list[int], batch: int, repeats: int, threads: int, memory: bool = True) -> dict:
    torch.set_num_threads(threads)
    report: dict = {"by_size": {}}
    for size in sizes:
        b = Bench(size, batch)
        res: dict = {}
        print(f"[{size}px] train step", flush=True)
        res["train_step"] = interleaved(
            {"ours": b.ours_train, "torchvision": b.tv_train,
             "ours_frozen_bn": lambda: b.ours_train(b.det_frozen)}, repeats)
        print(f"[{size}px] inference", flush=True)
        res["inference"] = interleaved({"ours": b.ours_infer, "torchvision": b.tv_infer}, repeats)
        print(f"[{size}px] loss", flush=True)
        o, t = b.loss_fns()
        res["loss"] = interleaved({"ours": o, "torchvision": t}, repeats * 2)
        for sat in (False, True):
            o, t = b.postprocess_fns(sat)
            name = "postprocess_saturated" if sat else "postprocess"
            print(f"[{size}px] {name}", flush=True)
            res[name] = interleaved({"ours": o, "torchvision": t}, repeats * 2)
        if memory:
            print(f"[{size}px] peak memory (fresh processes)", flush=True)
            res["peak_memory"] = {
                w: {"peak_rss_mb": peak_rss_train_mb(w, size, batch)}
                for w in ("ours", "torchvision", "ours_frozen_bn")
            }
        f_ours, f_tv = flops(b.ours_train), flops(b.tv_train)
        res["train_gflop"] = {"ours": f_ours / 1e9, "torchvision": f_tv / 1e9}
        res["train_gflops_per_s"] = {
            "ours": f_ours / 1e9 / (res["train_step"]["ours"]["median_ms"] / 1000),
            "torchvision": f_tv / 1e9 / (res["train_step"]["torchvision"]["median_ms"] / 1000),
        }
        report["by_size"][str(size)] = res
    report["matmul_peak_gflops"] = matmul_peak_gflops()
    report["ratios_by_size"] = {s: ratios(r) for s, r in report["by_size"].items()}
    report["ratios"] = report["ratios_by_size"][str(sizes[0])]
    return report


def ratios(res: dict) -> dict[str, float]:
    out = {}
    for name, r in res.items():
        if isinstance(r.get("ours"), dict) and "median_ms" in r["ours"]:
            out[name] = r["ours"]["median_ms"] / r["torchvision"]["median_ms"]
    if "peak_memory" in res:
        mem = res["peak_memory"]
        out["peak_memory"] = mem["ours"]["peak_rss_mb"] / mem["torchvision"]["peak_rss_mb"]
    return out


def print_speed(report: dict) -> None:
    for size, res in report["by_size"].items():
        print(f"\n{size}x{size}, batch {report['config']['batch']}, "
              f"{report['config']['threads']} threads: median / min ms")
        print(f"{'measure':<24}{'ours':>18}{'torchvision':>18}{'ratio':>8}")
        for name, r in res.items():
            if isinstance(r.get("ours"), dict) and "median_ms" in r["ours"]:
                o, t = r["ours"], r["torchvision"]
                print(f"{name:<24}{o['median_ms']:>10.1f} / {o['min_ms']:<6.1f}"
                      f"{t['median_ms']:>10.1f} / {t['min_ms']:<6.1f}"
                      f"{o['median_ms'] / t['median_ms']:>8.2f}")
        if "ours_frozen_bn" in res["train_step"]:
            f = res["train_step"]["ours_frozen_bn"]
            print(f"{'train_step frozen BN':<24}{f['median_ms']:>10.1f} / {f['min_ms']:<6.1f}")
        if "peak_memory" in res:
            m = res["peak_memory"]
            print(f"{'peak train RSS (MB)':<24}{m['ours']['peak_rss_mb']:>18.0f}"
                  f"{m['torchvision']['peak_rss_mb']:>18.0f}"
                  f"{m['ours']['peak_rss_mb'] / m['torchvision']['peak_rss_mb']:>8.2f}"
                  f"   (frozen BN: {m['ours_frozen_bn']['peak_rss_mb']:.0f})")
        g = res["train_gflops_per_s"]
        print(f"train step GFLOP/s: ours {g['ours']:.1f}, torchvision {g['torchvision']:.1f}; "
              f"matmul peak {report['matmul_peak_gflops']:.1f}")
