"""Sweeps: one job record per run, the summary table and figure of a multirun (layer 5)."""
