"""The model summary at the start of a run: Lightning's table of parameters and FLOPs (counted
on the module's ``example_input_array``, one input of the training size), without the columns
of input and output sizes: a detector's outputs are lists of per-level maps, one line each."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelSummary

SIZE_COLUMNS = ("In sizes", "Out sizes")


class FlopsSummary(ModelSummary):
    """``ModelSummary`` whose table leaves out :data:`SIZE_COLUMNS`."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], *args: Any, **kwargs: Any) -> None:
        kept = [(name, values) for name, values in summary_data if name not in SIZE_COLUMNS]
        ModelSummary.summarize(kept, *args, **kwargs)
