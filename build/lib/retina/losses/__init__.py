"""Training losses: pure loss functions (:mod:`retina.losses.functional`) and the criteria
that compose an assigner, a box coder and those functions (one call, see
:mod:`retina.losses.criterion`): RetinaNet's (:mod:`retina.losses.retinanet`) and GFL's
(:mod:`retina.losses.gfl`)."""

from retina.losses.criterion import Criterion, Targets, assign_targets
from retina.losses.functional import (
    distribution_focal_loss,
    focal_loss_from_labels,
    quality_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)
from retina.losses.gfl import GFLCriterion
from retina.losses.retinanet import (
    GHMCriterion,
    OHEMCriterion,
    RetinaNetCriterion,
    SoftmaxFocalCriterion,
)

__all__ = [
    "Criterion", "GFLCriterion", "GHMCriterion", "OHEMCriterion", "RetinaNetCriterion",
    "SoftmaxFocalCriterion", "Targets", "assign_targets", "distribution_focal_loss",
    "focal_loss_from_labels", "quality_focal_loss", "sigmoid_focal_loss", "softmax_focal_loss",
]
