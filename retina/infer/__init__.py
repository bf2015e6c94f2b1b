"""Inference: load any model file and run it on images or whole scenes.

    retina predict model=FILE images=DIR out=DIR [tile=N]
    retina parity ckpt_path=FILE         # eager vs TorchScript vs ONNX Runtime
    retina export-speed ckpt_path=FILE   # ms per tile of each runtime
    retina serve model=FILE              # over HTTP, batched across clients (``serving``)

``load(path)`` (also ``retina.load``) returns a predictor for a training checkpoint or any
export: :class:`Predictor` (eager PyTorch) or :class:`GraphPredictor` (TorchScript, ONNX
Runtime), one contract: uint8 images in, detections in their pixels out; ``predict_large``
runs a scene window by window (``sliced``), ``geo`` writes a scene's boxes as GeoJSON.
Every path runs :func:`retina.ops.inference.detect`.
"""

from retina.infer.predictor import Predictor, from_checkpoint
from retina.infer.runtimes import GraphPredictor, load

__all__ = ["GraphPredictor", "Predictor", "from_checkpoint", "load"]
