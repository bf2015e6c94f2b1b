"""The run config: composed from Python (tests, benchmarks, notebooks), checked for the keys a
recipe requires, and completed with the settings derived from others (:func:`derive`)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from retina.cli import CONF_DIR
from retina.conf import describe_recipe, with_recipe
from retina.training.precision import apply_precision

RECIPE_COMMANDS = ("train", "check")  # the commands whose recipe follows the data
# the checkout's top folder (for the tests: an installed package has no such folder)
ROOT = Path(__file__).resolve().parents[2]


def compose_run(overrides: list[str], output_dir: str | Path, name: str = "train") -> DictConfig:
    """The composed config ``retina <name> overrides...`` would get from the current directory
    (data under it, like the commands), writing into ``output_dir``, with Hydra's runtime values
    set so ``${hydra:...}`` resolves. ``train`` and ``check`` get the recipe of their data as
    the commands do (:func:`retina.conf.with_recipe`)."""
    if name in RECIPE_COMMANDS:
        overrides = with_recipe(list(overrides))
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    output_dir = Path(output_dir)
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path.cwd())
        cfg.paths.log_dir = str(output_dir.parent / "outputs")
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def recipe_line() -> str:
    """Which recipe this run has, why, and how to choose the other (its log's first line),
    from the group choices of the current Hydra run."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return describe_recipe(choices.get("experiment"), choices.get("data"))


def check_required(cfg: DictConfig) -> None:
    """The keys a recipe lists in ``required`` (``model.init_from`` of the experiments that
    fine-tune a converted model) are set; ``retina train`` checks the same before it starts
    (``retina.cli.missing_keys``).

    Raises:
        ValueError: naming the unset keys.
    """
    unset = [k for k in cfg.get("required") or [] if OmegaConf.select(cfg, k) is None]
    if unset:
        raise ValueError(f"this recipe needs {', '.join(unset)} (set {unset[0]}=...)")


def derive(cfg: DictConfig, datamodule) -> None:
    """Write the settings that follow from others into ``cfg``, in this one place, before the
    model is built (so the checkpoint's run config holds them):

    - ``model.detector.head.num_classes``: the data's class count;
    - ``model.detector.head.background_class``: true when the criterion is a softmax over K+1
      channels (its class attribute ``background_class``: loss=softmax_focal|ohem), which the
      head then has; every reader (the criterion, ``retina.ops.inference``) takes it from there;
    - ``loss.class_weights`` given as ``inverse`` or ``log``: the numbers, from the training
      annotations;
    - ``trainer.precision=auto``: ``bf16-mixed`` where the hardware computes bfloat16
      natively, else ``32-true`` (``retina.training.precision``).
    """
    with open_dict(cfg):
        if cfg.get("trainer") is not None:
            apply_precision(cfg.trainer)
        cfg.model.detector.head.num_classes = datamodule.num_classes
        if get_class(cfg.model.criterion._target_).background_class:
            cfg.model.detector.head.background_class = True
        mode = cfg.get("loss") and cfg.loss.get("class_weights")
        if isinstance(mode, str):  # inverse | log -> the numbers, kept in the run config
            cfg.loss.class_weights = datamodule.class_weights(mode)
