"""Single-stage dense object detectors (RetinaNet, GFL) with PyTorch Lightning and Hydra.

Layers, lowest first; a module imports only from lower layers and its own folder
(``tests/test_layers.py`` keeps this; docs/architecture.md maps them):

- ``cli`` (the command line's grammar and the list of commands: hydra and omegaconf only),
  ``schema`` (registered names and versions of saved files), ``compat`` (old import paths)
  and ``conf`` (the Hydra configs) sit below every layer: any module may import them
0. ``model`` (the pure network and its anchors), ``data`` (datasets, transforms, collate)
1. ``ops`` (box coders, per-level layout, postprocess, and ``ops.inference.detect``: the one
   inference path from network to detections in image pixels)
2. ``assign`` (MaxIoU, ATSS: one contract)
3. ``losses`` (loss functions and the criteria composing an assigner with them)
4. ``training`` (LightningModule, checkpoints, COCO evaluation, run building)
5. ``export`` (writing safetensors, TorchScript, ONNX), ``analysis`` (the evaluation report
   and the notebooks' helpers), ``sweeps``
6. ``infer`` (the predictors and ``retina.load``, runtimes, sliced prediction, GeoJSON,
   parity and speed across runtimes)
7. ``bench`` (benchmarks)
8. entry points ``train``, ``eval``, ``predict``, ``convert`` (torchvision and mmdetection
   detectors to retina checkpoints and exports), ``__main__`` (the ``retina`` command, which
   runs the others by name) and every folder's ``__main__``: nothing imports them
"""

__all__ = ["load"]


def __getattr__(name: str):
    # Lazy: `import retina` (and every `python -m retina.*`) stays light.
    if name == "load":
        from retina.infer import load

        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
