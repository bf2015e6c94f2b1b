"""Evaluation entries: ``python -m retina.eval ckpt_path=...`` (a checkpoint) and
``python -m retina.eval.report ann=... results=... out=...`` (a results file); both write the
report of :mod:`retina.analysis.report`."""
