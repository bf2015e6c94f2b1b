"""Training: the LightningModule, checkpoint loading and rebuild, COCO evaluation, train and
eval runs (layer 4; see retina/__init__.py)."""
