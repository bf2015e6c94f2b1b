"""Export formats: write a model as safetensors + JSON, TorchScript or ONNX.

    retina export ckpt_path=FILE format=safetensors|torchscript|onnx out=PATH

``formats`` writes the files, ``graph`` is the traced inference path of TorchScript and ONNX,
``meta`` the metadata every export carries. Reading and running them (``retina.load``, the
predictors, parity and speed across runtimes) is :mod:`retina.infer`.
"""

from retina.compat import moved
from retina.export.formats import FORMATS, export

__all__ = ["FORMATS", "export"]
# moved to retina.infer
__getattr__ = moved(__name__, "retina.infer",
                    names=("GraphPredictor", "Predictor", "from_checkpoint", "load"))
