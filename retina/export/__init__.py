"""Export checkpoints (safetensors + JSON, TorchScript, ONNX) and run them.

    retina export ckpt_path=FILE format=safetensors|torchscript|onnx out=PATH
    retina parity ckpt_path=FILE         # eager vs TorchScript vs ONNX Runtime
    retina export-speed ckpt_path=FILE   # ONNX Runtime vs eager, per tile

``load(path)`` returns a predictor for any of them (or a training checkpoint).
"""

from retina.export.formats import FORMATS, export
from retina.export.predictor import Predictor, from_checkpoint
from retina.export.runtimes import GraphPredictor, load

__all__ = ["FORMATS", "GraphPredictor", "Predictor", "export", "from_checkpoint", "load"]
