"""Speed and memory against torchvision's RetinaNet-R50-FPN, in one process and one run.

Same inputs, same thread count, repeats interleaved (ours, torchvision, ours, ...) after
warm-up, so machine noise cancels in the ratios ours / torchvision.

Ours runs as our inference path runs it: batch norms folded into the convolutions
(``retina.model.fuse``, what ``retina.load`` predictors and exports do) for inference. Variant
rows sit beside it (``ours_unfolded``, ``ours_channels_last``, ``ours_frozen_bn``) and get
their own ratio (``inference_unfolded``, ...); with ``compile`` the networks of both sides
(not their losses and postprocesses) go through ``torch.compile`` in ``train_step_compiled``
and ``inference_compiled``. On CUDA every timing waits for the device; with ``bf16-mixed``
the train steps and inference run under ``torch.autocast`` (bfloat16) on both sides, the loss
and postprocess rows stay float32.
"""

from __future__ import annotations

import copy
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from functools import partial
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import retinanet_resnet50_fpn

from retina.losses.retinanet import RetinaNetCriterion
from retina.model.anchors import AnchorGenerator
from retina.model.backbone import resnet
from retina.model.detector import Detector
from retina.model.fuse import fold_batchnorm
from retina.model.head import RetinaHead
from retina.ops.boxes import DeltaCoder
from retina.ops.levels import flatten_levels
from retina.ops.postprocess import Postprocess

NUM_CLASSES = 91  # torchvision's COCO head
PRECISIONS = ("fp32", "bf16-mixed")


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


def random_batch(batch: int, size: int, num_boxes: int = 10, seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    xy = torch.rand(batch, num_boxes, 2, generator=g) * size * 0.7
    wh = torch.rand(batch, num_boxes, 2, generator=g) * size * 0.3 + 16
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=-1)  # (B, M, 4)
    labels = torch.randint(0, NUM_CLASSES, (batch, num_boxes), generator=g)
    return images.to(device), boxes.to(device), labels.to(device)


def check_device(device: str, precision: str) -> torch.device:
    """The device to bench on, refused with a clear message when absent or unknown."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device}: torch {torch.__version__} sees no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    return dev


def autocast(device: torch.device, precision: str):
    """bfloat16 autocast for ``bf16-mixed`` (Lightning's meaning), else nothing."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------- measuring
def timed(fn: Callable[[], object], device: torch.device = torch.device("cpu")) -> float:
    synchronize(device)
    t = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - t) * 1000


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                device: torch.device = torch.device("cpu")) -> dict:
    """Median and min milliseconds of each function, run in turn ``repeats`` times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v)} for k, v in times.items()}


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b), dev) for _ in range(repeats))
    return 2 * n**3 / (best / 1000) / 1e9


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# --------------------------------------------------------------------------- speed
def compiled(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose forward goes through ``torch.compile`` (as ``model.compile``
    does in training), the original left eager."""
    model = copy.deepcopy(model)
    model.compile()
    return model


class Bench:
    """The functions timed for one input size."""

    def __init__(self, size: int, batch: int, device: str = "cpu", precision: str = "fp32"):
        torch.manual_seed(0)
        self.size = size
        self.device = check_device(device, precision)
        self.precision = precision
        self.images, self.boxes, self.labels = random_batch(batch, size, device=self.device)
        self.det, self.gen = ours()
        self.det.to(self.device)
        self.det_frozen = ours(frozen=True)[0].to(self.device)
        self.tv = theirs(size).to(self.device)
        self.crit = RetinaNetCriterion(box_loss="l1")  # torchvision's box loss
        self.pp = Postprocess(DeltaCoder())
        self.sizes = torch.tensor([[size, size]] * batch, device=self.device)
        self.tv_targets = [{"boxes": b, "labels": lab} for b, lab in zip(self.boxes, self.labels)]
        with torch.no_grad():
            self.det.eval()
            self.cls_maps, self.box_maps = self.det(self.images)
        self.anchors = self.gen([m.shape[-2:] for m in self.cls_maps], self.device)
        self.level_sizes = [len(a) for a in self.anchors]
        self.folded = fold_batchnorm(self.det)  # the network of retina.load and the exports

    def channels_last(self) -> tuple[Detector, torch.Tensor]:
        """Copies of our network and of the images in channels-last layout."""
        det = copy.deepcopy(self.det).to(memory_format=torch.channels_last)
        return det, self.images.contiguous(memory_format=torch.channels_last)

    # train step: forward, losses, backward
    def ours_train(self, det: Detector | None = None, images: torch.Tensor | None = None):
        det = det or self.det
        images = self.images if images is None else images
        det.train()
        det.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            cls, box = det(images)
            anchors = torch.cat(self.gen([m.shape[-2:] for m in cls], self.device))
            losses = self.crit(flatten_levels(cls, NUM_CLASSES), flatten_levels(box, 4), anchors,
                               self.boxes, self.labels)
        (losses["loss_cls"] + losses["loss_box"]).backward()

    def tv_train(self, tv: torch.nn.Module | None = None):
        tv = tv or self.tv
        tv.train()
        tv.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            losses = tv(list(self.images), self.tv_targets)
        sum(losses.values()).backward()

    # inference: network + postprocess
    @torch.no_grad()
    def ours_infer(self, det: Detector | None = None, images: torch.Tensor | None = None):
        det = det or self.folded
        images = self.images if images is None else images
        det.eval()
        with autocast(self.device, self.precision):
            cls, box = det(images)
        cls, box = [m.float() for m in cls], [m.float() for m in box]
        self.pp(cls, box, self.gen([m.shape[-2:] for m in cls], self.device), self.sizes)

    @torch.no_grad()
    def tv_infer(self, tv: torch.nn.Module | None = None):
        tv = tv or self.tv
        tv.eval()
        with autocast(self.device, self.precision):
            tv(list(self.images))

    def compiled_fns(self) -> tuple[dict, dict, bool]:
        """Train and inference functions of both networks compiled (ours: the detector's
        forward; torchvision's: its backbone with FPN, and its head), and whether
        torchvision's compiled (if not, its eager model stands in, and the row says so)."""
        det, folded = compiled(self.det), compiled(self.folded)
        tv = copy.deepcopy(self.tv)
        tv.backbone.compile()
        tv.head.compile()
        try:
            self.tv_train(tv)
            self.tv_infer(tv)
            tv_compiled = True
        except Exception as err:  # noqa: BLE001 - any compile failure: eager stands in
            print(f"torchvision's network did not compile ({type(err).__name__}: {err}); "
                  "its eager model stands in", flush=True)
            tv, tv_compiled = self.tv, False
        train = {"ours": partial(self.ours_train, det), "torchvision": partial(self.tv_train, tv)}
        infer = {"ours": partial(self.ours_infer, folded), "torchvision": partial(self.tv_infer, tv)}
        return train, infer, tv_compiled

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
        cls_maps = [(torch.randn(m.shape, generator=g) + shift).to(self.device)
                    for m in self.cls_maps]
        box_maps = [(torch.randn(m.shape, generator=g) * 0.1).to(self.device)
                    for m in self.box_maps]
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


def peak_train_memory_mb(which: str, size: int, batch: int, device: str = "cpu",
                         precision: str = "fp32") -> dict[str, float]:
    """Peak memory of a fresh process doing two train steps (one model, nothing else loaded):
    ``{"peak_rss_mb": ...}`` on CPU, ``{"peak_cuda_mb": ...}`` (the most CUDA memory
    allocated by tensors) on a GPU."""
    code = (
        "from retina.bench.speed import _peak_child;"
        f"_peak_child({which!r}, {size}, {batch}, {device!r}, {precision!r})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    key = "peak_cuda_mb" if torch.device(device).type == "cuda" else "peak_rss_mb"
    return {key: float(out.stdout.strip().splitlines()[-1])}


def _peak_child(which: str, size: int, batch: int, device: str = "cpu",
                precision: str = "fp32") -> None:
    dev = check_device(device, precision)
    images, boxes, labels = random_batch(batch, size, device=dev)
    if which == "torchvision":
        model = theirs(size).to(dev).train()
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]

        def step():
            with autocast(dev, precision):
                losses = model(list(images), targets)
            sum(losses.values()).backward()
    else:
        det, gen = ours(frozen=which == "ours_frozen_bn")
        det.to(dev).train()
        crit = RetinaNetCriterion(box_loss="l1")

        def step():
            with autocast(dev, precision):
                cls, box = det(images)
                anchors = torch.cat(gen([m.shape[-2:] for m in cls], dev))
                losses = crit(flatten_levels(cls, NUM_CLASSES), flatten_levels(box, 4), anchors,
                              boxes, labels)
            (losses["loss_cls"] + losses["loss_box"]).backward()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        print(torch.cuda.max_memory_allocated(dev) / 2**20)
    else:
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


def peak_mb(entry: dict[str, float]) -> float:
    """The one peak of a ``peak_memory`` entry, RSS or CUDA."""
    return entry.get("peak_cuda_mb", entry.get("peak_rss_mb"))


def speed(sizes: list[int], batch: int, repeats: int, threads: int, memory: bool = True,
          device: str = "cpu", precision: str = "fp32", channels_last: bool = True,
          compile: bool = False) -> dict:
    """Every measure at every size (see the module docstring); ``channels_last`` adds the
    channels-last rows, ``compile`` the compiled rows (minutes of compiling on a CPU)."""
    torch.set_num_threads(threads)
    dev = check_device(device, precision)
    report: dict = {"by_size": {}}
    for size in sizes:
        b = Bench(size, batch, device, precision)
        res: dict = {}
        print(f"[{size}px] train step", flush=True)
        train = {"ours": b.ours_train, "torchvision": b.tv_train,
                 "ours_frozen_bn": partial(b.ours_train, b.det_frozen)}
        infer = {"ours": b.ours_infer, "torchvision": b.tv_infer,
                 "ours_unfolded": partial(b.ours_infer, b.det)}
        if channels_last:
            det_cl, images_cl = b.channels_last()
            train["ours_channels_last"] = partial(b.ours_train, det_cl, images_cl)
            infer["ours_channels_last"] = partial(b.ours_infer, fold_batchnorm(det_cl), images_cl)
        res["train_step"] = interleaved(train, repeats, device=dev)
        print(f"[{size}px] inference", flush=True)
        res["inference"] = interleaved(infer, repeats, device=dev)
        if compile:
            print(f"[{size}px] compiling both networks (minutes on a CPU)", flush=True)
            train_c, infer_c, tv_compiled = b.compiled_fns()
            res["train_step_compiled"] = interleaved(train_c, repeats, device=dev)
            res["inference_compiled"] = interleaved(infer_c, repeats, device=dev)
            res["torchvision_compiled"] = tv_compiled
        print(f"[{size}px] loss", flush=True)
        o, t = b.loss_fns()
        res["loss"] = interleaved({"ours": o, "torchvision": t}, repeats * 2, device=dev)
        for sat in (False, True):
            o, t = b.postprocess_fns(sat)
            name = "postprocess_saturated" if sat else "postprocess"
            print(f"[{size}px] {name}", flush=True)
            res[name] = interleaved({"ours": o, "torchvision": t}, repeats * 2, device=dev)
        if memory:
            print(f"[{size}px] peak memory (fresh processes)", flush=True)
            res["peak_memory"] = {w: peak_train_memory_mb(w, size, batch, device, precision)
                                  for w in ("ours", "torchvision", "ours_frozen_bn")}
        f_ours, f_tv = flops(b.ours_train), flops(b.tv_train)
        res["train_gflop"] = {"ours": f_ours / 1e9, "torchvision": f_tv / 1e9}
        res["train_gflops_per_s"] = {
            "ours": f_ours / 1e9 / (res["train_step"]["ours"]["median_ms"] / 1000),
            "torchvision": f_tv / 1e9 / (res["train_step"]["torchvision"]["median_ms"] / 1000),
        }
        report["by_size"][str(size)] = res
    report["matmul_peak_gflops"] = matmul_peak_gflops(device=device)
    report["ratios_by_size"] = {s: ratios(r) for s, r in report["by_size"].items()}
    report["ratios"] = report["ratios_by_size"][str(sizes[0])]
    return report


def timed_rows(res: dict) -> dict[str, dict]:
    """The measures of one size that hold timings (``ours``, ``torchvision``, variants)."""
    return {name: r for name, r in res.items()
            if isinstance(r, dict) and isinstance(r.get("ours"), dict) and "median_ms" in r["ours"]}


def ratios(res: dict) -> dict[str, float]:
    """ours / torchvision median time of every measure (``inference``), and of every variant
    of ours against the same torchvision (``ours_channels_last`` -> ``inference_channels_last``);
    peak train memory ours / torchvision."""
    out = {}
    for name, r in timed_rows(res).items():
        tv = r["torchvision"]["median_ms"]
        for who, t in r.items():
            if who.startswith("ours"):
                out[name + who[len("ours"):]] = t["median_ms"] / tv
    if "peak_memory" in res:
        mem = res["peak_memory"]
        out["peak_memory"] = peak_mb(mem["ours"]) / peak_mb(mem["torchvision"])
    return out


def print_speed(report: dict) -> None:
    cfg = report["config"]
    for size, res in report["by_size"].items():
        print(f"\n{size}x{size}, batch {cfg['batch']}, {cfg['threads']} threads, "
              f"{cfg.get('device', 'cpu')}, {cfg.get('precision', 'fp32')}: median / min ms")
        print(f"{'measure':<34}{'ours':>18}{'torchvision':>18}{'ratio':>8}")
        for name, r in timed_rows(res).items():
            t = r["torchvision"]
            tv_label = "" if "compiled" not in name or res.get("torchvision_compiled") else " (tv eager)"
            for who, o in r.items():
                if not who.startswith("ours"):
                    continue
                label = name + who[len("ours"):]
                print(f"{label + tv_label:<34}{o['median_ms']:>10.1f} / {o['min_ms']:<6.1f}"
                      f"{t['median_ms']:>10.1f} / {t['min_ms']:<6.1f}"
                      f"{o['median_ms'] / t['median_ms']:>8.2f}")
        if "peak_memory" in res:
            m = {w: peak_mb(e) for w, e in res["peak_memory"].items()}
            print(f"{'peak train memory (MB)':<34}{m['ours']:>18.0f}{m['torchvision']:>18.0f}"
                  f"{m['ours'] / m['torchvision']:>8.2f}   (frozen BN: {m['ours_frozen_bn']:.0f})")
        g = res["train_gflops_per_s"]
        print(f"train step GFLOP/s: ours {g['ours']:.1f}, torchvision {g['torchvision']:.1f}; "
              f"matmul peak {report['matmul_peak_gflops']:.1f}")
