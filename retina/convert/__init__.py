"""Detectors trained elsewhere, as retina checkpoints and exports (and back to torchvision).

    retina convert torchvision FILE.pth out=DIR [variant=v1|v2] [bn_eps=...]
    retina convert mmdet FILE.pth out=DIR [model=retinanet|gfl] [style=pytorch|caffe]
        [mean=[...]] [std=[...]] [bgr_to_rgb=true|false]
    retina convert to-torchvision CKPT out=FILE.pth

``overrides=[data.min_size=640,...]`` passes Hydra overrides to the experiment the model is
built from.

``torchvision`` and ``mmdet`` write ``DIR/model.ckpt`` (read by ``retina.eval``,
``retina.export``, ``retina.load`` and ``model.init_from``) and ``DIR/model.safetensors``
+ ``DIR/model.json``. Every tensor is mapped and checked (:mod:`retina.convert.keys`);
the experiment configs the conversions build from hold the settings that make retina
compute the foreign model's outputs.
"""

from retina.convert.keys import ConversionError

__all__ = ["ConversionError"]
