"""Eager inference: uint8 images in, detections in original image pixels out.

The images are preprocessed like the evaluation loader's (``retina.data.collate.preprocess``)
and run through :func:`retina.ops.inference.detect`, the path validation takes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from retina.data.collate import preprocess
from retina.data.transforms import image_transforms
from retina.export.meta import ExportMeta, meta_from_checkpoint
from retina.infer.sliced import SlicedPrediction
from retina.model.detector import Detector
from retina.model.fuse import fold_batchnorm
from retina.ops.inference import Detections, detect
from retina.ops.postprocess import Postprocess
from retina.training.checkpoint import detector_weights, load_checkpoint, run_config

Images = Tensor | list[Tensor]  # uint8 (B, 3, H, W), or a list of (3, H_i, W_i)


def image_list(images: Images) -> list[Tensor]:
    """Check and split ``images`` into a list of (3, H_i, W_i) uint8 tensors."""
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(f"expected a uint8 batch (B, 3, H, W), got {tuple(images.shape)}")
        images = list(images)
    for i, im in enumerate(images):
        ok = isinstance(im, Tensor) and im.dtype == torch.uint8 and im.ndim == 3
        if not ok or im.shape[0] != 3:
            what = f"{im.dtype} {tuple(im.shape)}" if isinstance(im, Tensor) else type(im).__name__
            raise ValueError(f"image {i}: expected a uint8 RGB tensor (3, H, W), got {what}")
    return list(images)


def build_parts(meta: ExportMeta) -> tuple[Detector, Postprocess]:
    """Detector (random init, with its anchors) and postprocess from ``meta.model``."""
    cfg = OmegaConf.create(meta.model)
    cfg.detector.backbone.weights = None
    cfg.detector.head.num_classes = meta.num_classes
    norm = {k: tuple(v) for k, v in (("pixel_mean", meta.pixel_mean),
                                     ("pixel_std", meta.pixel_std)) if v is not None}
    detector = instantiate(cfg.detector, **norm)
    return detector, instantiate(cfg.postprocess)(coder=instantiate(cfg.coder))


class Predictor(SlicedPrediction):
    """The eval path of ``retina.eval`` as a callable.

    Each image is resized like the evaluation data (``meta.size`` or ``meta.min_size`` /
    ``meta.max_size``, interpolated as ``meta.resize``) and batched with zero padding to
    ``meta.size_divisible`` (``retina.data.collate.preprocess``), then run through
    :func:`retina.ops.inference.detect`: network, postprocess, back to the pixels of the
    given image.

    Args:
        detector: the network, weights loaded, with the anchors of the training run.
        postprocess: decoder + NMS with the thresholds to use.
        meta: classes and input rules.
        device: where to run.
        fold_bn: run a copy of ``detector`` with its batch norms folded into the convolutions
            (``retina.model.fuse``; the same outputs to float rounding, faster), made on the
            first call; ``detector`` itself keeps its weights as trained (what a safetensors
            export writes).

    Example:
        >>> predictor = retina.load("model.safetensors")  # doctest: +SKIP
        >>> dets = predictor(read_rgb("tile.png")[None])  # [{"boxes": (D, 4), ...}]
        >>> scene = predictor.predict_large("scene.tif", tile=400)  # {"boxes": (D, 4), ...}
    """

    def __init__(
        self, detector: Detector, postprocess: Postprocess, meta: ExportMeta,
        device: str | torch.device = "cpu", fold_bn: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.detector = detector.eval().to(self.device)
        self.fold_bn = fold_bn
        self._network: Detector | None = None
        self.postprocess = postprocess
        self.meta = meta
        self.transform = image_transforms(meta.size, meta.min_size, meta.max_size, meta.resize)

    @property
    def network(self) -> Detector:
        """The detector as inference runs it: ``detector``, its batch norms folded with
        ``fold_bn`` (folded once; change ``detector``'s weights before the first call)."""
        if self._network is None:
            self._network = fold_batchnorm(self.detector) if self.fold_bn else self.detector
        return self._network

    def set_postprocess(self, **settings: float | None) -> Predictor:
        """Override ``score_thresh`` / ``nms_thresh`` / ``topk`` / ``max_det`` in the
        postprocess and the metadata (None keeps the current value)."""
        for key, value in settings.items():
            if not hasattr(self.postprocess, key) or key == "coder":
                raise ValueError(f"not a postprocess setting: {key}")
            if value is not None:
                setattr(self.postprocess, key, value)
                self.meta.model["postprocess"][key] = value
        return self

    def preprocess(self, images: Images) -> dict[str, Tensor]:
        """Resize and batch like the eval data loader (``retina.data.collate.preprocess``).

        Returns:
            ``images`` (B, 3, H, W) float32 in [0, 1], zero-padded; ``image_sizes`` (B, 2)
            after resize; ``orig_sizes`` (B, 2) of the given images.
        """
        batch = preprocess([im.cpu() for im in image_list(images)], self.transform,
                           self.meta.size_divisible)
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def __call__(self, images: Images) -> Detections:
        """Detections per image.

        Args:
            images: uint8 RGB, (B, 3, H, W) or a list of (3, H_i, W_i).

        Returns:
            per image ``boxes`` (D, 4) x1y1x2y2 in the image's pixels, ``scores`` (D,),
            ``labels`` (D,) in 0..K-1 (``meta.cat_ids[label]`` is the dataset category),
            and for GFL ``spread`` (D, 4) per-side std in pixels; sorted by score.
        """
        batch = self.preprocess(images)
        return detect(self.network, self.postprocess, batch["images"], batch["image_sizes"],
                      batch["orig_sizes"])


def from_parts(meta: ExportMeta, state_dict: dict[str, Tensor], origin: str | Path,
               device: str | torch.device = "cpu") -> Predictor:
    """A Predictor from metadata and the Detector's state dict (errors name ``origin``)."""
    detector, postprocess = build_parts(meta)
    missing, unexpected = detector.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{origin}: weights do not fit the model in its metadata: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return with_normalisation(Predictor(detector, postprocess, meta, device))


def with_normalisation(predictor: Predictor) -> Predictor:
    """Record the Detector's input normalisation in the predictor's metadata."""
    predictor.meta.pixel_mean = predictor.detector.pixel_mean.flatten().tolist()
    predictor.meta.pixel_std = predictor.detector.pixel_std.flatten().tolist()
    return predictor


def from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """A Predictor from a ``retina.train`` checkpoint (read with ``weights_only=True``).

    Only the Detector and its postprocess are built, not the training module: inference and
    ``retina serve`` start without importing Lightning (3 s on a 2-core machine).
    """
    ckpt = load_checkpoint(path)
    predictor = from_parts(meta_from_checkpoint(ckpt, path), detector_weights(ckpt), path, device)
    if run_config(ckpt).model.get("channels_last"):  # as the training module ran it
        predictor.detector.to(memory_format=torch.channels_last)
    return predictor
