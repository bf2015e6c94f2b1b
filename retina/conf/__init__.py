"""The Hydra configs (YAML), shipped with the package; ``conf/`` at the top of a checkout links
here. Hydra finds them as ``pkg://retina.conf`` (see :mod:`retina.cli`).

And the recipe a run gets from its data (:func:`with_recipe`): ``retina train`` (and ``retina
check``) without ``experiment=`` take the recipe that fits the kind of data: NEON's tiles the
aerial one (``experiment/neon_gfl.yaml``, train.yaml's default), COCO, VOC and YOLO data the
photo one (``experiment/photo.yaml``). The choice is an override added to the command line,
not an interpolation in train.yaml's defaults list (``experiment: ${data}``): Hydra allows no
``override`` in the subtree of an interpolated choice, and every recipe overrides the model,
backbone, optimizer and schedule groups. So ``hydra.overrides.task`` (the run's
``.hydra/overrides.yaml``) records the recipe the run got.

Below every layer: the standard library only.
"""

from __future__ import annotations

AERIAL = "aerial"  # experiment/aerial.yaml: NEON's recipe (neon_gfl) for any data
PHOTO = "photo"  # experiment/photo.yaml
DEFAULT_DATA = "neon_trees"  # train.yaml's data
DEFAULT_EXPERIMENT = "neon_gfl"  # train.yaml's experiment: the aerial recipe on NEON
# The experiment each data option gets when none is named; any other data option: PHOTO.
RECIPE_OF_DATA = {"neon_trees": DEFAULT_EXPERIMENT}
# Groups whose configs choose an experiment themselves (hparams_search=focal_optuna does).
CHOOSES_EXPERIMENT = ("experiment", "hparams_search")

# What each recipe is for, and the other one to choose (the first lines of a run's log).
KINDS = {
    PHOTO: ("photo", "ordinary photos keep their aspect ratio (shorter side 640-800) and their "
                     "up (no quarter turns); GFL on ResNet-50-FPN, SGD 1x",
            f"for aerial images or tiles: experiment={AERIAL}"),
    AERIAL: ("aerial", "square 448-px tiles, quarter turns and both flips (no up); GFL on "
                       "MobileNetV2-FPN, AdamW, cosine",
             f"for ordinary photos: experiment={PHOTO}"),
}
KINDS[DEFAULT_EXPERIMENT] = KINDS[AERIAL]


def _key(arg: str) -> str:
    """``+data=coco`` -> ``data``."""
    return arg.split("=", 1)[0].lstrip("+~")


def recipe_of(data: str) -> str:
    """The experiment the data option ``data`` gets when none is named."""
    return RECIPE_OF_DATA.get(data, PHOTO)


def with_recipe(overrides: list[str]) -> list[str]:
    """``overrides`` (a ``retina train`` command line) with ``experiment=RECIPE`` added when
    they choose data whose recipe is not train.yaml's default experiment and choose no
    experiment (nor an ``hparams_search``, which chooses its own).

    A sweep over data options of different recipes (``-m data=neon_trees,coco``) gets none
    added: its jobs run train.yaml's default, and their logs say how to choose.
    """
    overrides = list(overrides)
    if any(_key(a) in CHOOSES_EXPERIMENT for a in overrides if not a.startswith("-")):
        return overrides
    data = [i for i, a in enumerate(overrides) if _key(a) == "data" and "=" in a]
    if not data:
        return overrides
    recipes = {recipe_of(v.strip()) for v in overrides[data[-1]].split("=", 1)[1].split(",")}
    if len(recipes) > 1 or recipes == {DEFAULT_EXPERIMENT}:
        return overrides
    # beside data=...: Hydra's parser takes the overrides as one run of arguments (--cfg job
    # after them ends it)
    return [*overrides[: data[-1] + 1], f"experiment={recipes.pop()}", *overrides[data[-1] + 1:]]


def describe_recipe(experiment: str | None, data: str | None) -> str:
    """One line for a run's log: which recipe, why, and how to choose the other.

    Args:
        experiment: the run's experiment choice (``hydra.runtime.choices.experiment``).
        data: its data choice.
    """
    data = data or DEFAULT_DATA
    default = recipe_of(data)
    if experiment in KINDS and KINDS[experiment] is KINDS[default]:
        name, why, other = KINDS[experiment]
        return (f"recipe: {name} (experiment={experiment}), the default for data={data}: "
                f"{why}; {other}")
    if experiment in KINDS:
        name, why, other = KINDS[experiment]
        return (f"recipe: {name} (experiment={experiment}), chosen instead of data={data}'s "
                f"default (experiment={default}): {why}; {other}")
    return (f"recipe: experiment={experiment}, chosen instead of data={data}'s default "
            f"(experiment={default}); the recipes by kind of data: experiment={PHOTO} "
            f"(ordinary photos), experiment={AERIAL} (aerial images, tiles)")
