"""Export checkpoints (safetensors + JSON, TorchScript, ONNX) and run them.

    python -m retina.export ckpt_path=FILE format=safetensors|torchscript|onnx out=PATH
    python -m retina.export.parity ckpt_path=FILE     # eager vs TorchScript vs ONNX Runtime
    python -m retina.export.speed ckpt_path=FILE      # ONNX Runtime vs eager, per tile

``load(path)`` returns a predictor for any of them (or a training checkpoint).
"""

from retina.export.formats import FORMATS, export
from retina.export.predictor import Predictor, from_checkpoint
from retina.export.runtimes import GraphPredictor, load

__all__ = ["FORMATS", "GraphPredictor", "Predictor", "export", "from_checkpoint", "load"]
