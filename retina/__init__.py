"""Single-stage dense object detectors (RetinaNet, GFL) with PyTorch Lightning and Hydra."""

__all__ = ["load"]


def __getattr__(name: str):
    # Lazy: `import retina` (and every `python -m retina.*`) stays light.
    if name == "load":
        from retina.export import load

        return load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
