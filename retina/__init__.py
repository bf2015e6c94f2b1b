"""Single-stage dense object detectors (RetinaNet, GFL) with PyTorch Lightning and Hydra.

Layers, lowest first; a module imports only from lower layers and its own folder
(``tests/test_layers.py`` keeps this):

- ``cli`` (the command line's grammar and the list of commands: hydra and omegaconf only) and
  ``conf`` (the Hydra configs) sit below every layer: any module may import them
0. ``model`` (the pure network and its anchors), ``data`` (datasets, transforms, collate)
1. ``ops`` (box coders, per-level layout, postprocess): box maths, torch only
2. ``assign`` (MaxIoU, ATSS: one contract)
3. ``losses`` (loss functions and the criteria composing an assigner with them)
4. ``training`` (LightningModule, checkpoint rebuild, COCO evaluation, run building)
5. ``export``, ``analysis``, ``sweeps``
6. ``bench`` (benchmarks, also of the exported predictors)
7. entry points ``train``, ``eval``, ``predict``, ``convert`` (torchvision and mmdetection
   detectors to retina checkpoints and exports, written with ``export``) and ``__main__`` (the
   ``retina`` command, which runs the others by name): nothing imports them
"""

__all__ = ["load"]


def __getattr__(name: str):
    # Lazy: `import retina` (and every `python -m retina.*`) stays light.
    if name == "load":
        from retina.export import load

        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
