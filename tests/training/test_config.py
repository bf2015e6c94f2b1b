"""retina.training.config: the composed Hydra configs (conf/) of runs, experiments and sweeps."""

import inspect
import types

import lightning as L
import pytest
import torch
import yaml
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from retina.losses.gfl import GFLCriterion
from retina.model.gfl_head import GFLHead
from retina.ops.boxes import DistanceCoder
from retina.training.config import CONF_DIR as CONF
from retina.training.config import compose_run


def test_trainer_config_lists_every_trainer_argument():
    listed = set(yaml.safe_load((CONF / "trainer" / "default.yaml").read_text())) - {"_target_"}
    params = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}
    assert listed == params


def test_any_trainer_flag_from_the_command_line(tiny_cfg):
    cfg = tiny_cfg("trainer.gradient_clip_val=10", "trainer.precision=bf16-mixed", "trainer.max_epochs=3")
    assert cfg.trainer.gradient_clip_val == 10 and cfg.trainer.precision == "bf16-mixed"


def test_unknown_key_names_the_key(tiny_cfg):
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        tiny_cfg("trainer.max_epoch=3")
    with pytest.raises(ConfigCompositionException, match="gama"):
        tiny_cfg("loss.gama=1.5")


@pytest.mark.parametrize("experiment", ["neon_retinanet", "retinanet_r50_1x"])
def test_experiments_compose_and_build(tiny_cfg, experiment):
    cfg = tiny_cfg(f"experiment={experiment}", "model.detector.backbone.weights=null")
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 3
    module = instantiate(cfg.model)
    assert module.detector.head.num_classes == 3
    if experiment == "retinanet_r50_1x":
        assert cfg.optim.lr == 0.01 and cfg.data.min_size == 800 and cfg.trainer.max_epochs == 12
        assert module.detector.backbone.out_channels == (512, 1024, 2048)


def test_focal_overrides_reach_the_criterion(tiny_cfg):
    cfg = tiny_cfg(
        "experiment=neon_retinanet", "loss.gamma=1.5", "loss.alpha=0.5",
        "model.detector.backbone.weights=null",
    )
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
    crit = instantiate(cfg.model).criterion
    assert (crit.gamma, crit.alpha) == (1.5, 0.5)


def test_the_head_takes_its_anchor_count_from_the_anchor_generator(tiny_cfg):
    cfg = tiny_cfg(
        "experiment=neon_retinanet", "model.detector.anchors.ratios=[0.5,1.0]",
        "model.detector.backbone.weights=null",
    )
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
    head = instantiate(cfg.model).detector.head
    assert head.num_anchors == 6  # 3 scales per octave x 2 ratios, configured nowhere else
    assert head.cls_pred.out_channels == 6 and head.box_pred.out_channels == 6 * 4
    cfg = tiny_cfg("experiment=neon_gfl", "model.detector.anchors.ratios=[0.5,1.0]",
                   "model.detector.backbone.weights=null")
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
    with pytest.raises(Exception, match="GFL has one anchor per location, the anchors give 2"):
        instantiate(cfg.model)


def test_bad_value_names_the_key(tiny_cfg):
    cfg = tiny_cfg("experiment=neon_retinanet", "loss.gamma=-1")
    with pytest.raises(Exception, match="loss.gamma must be a number >= 0"):
        instantiate(cfg.loss)()  # a partial: the model adds its coder


# ---------------------------------------------------------------- GFL


@pytest.mark.parametrize("experiment", ["neon_gfl", "gfl_r50_1x"])
def test_gfl_experiments_compose_and_build(tiny_cfg, experiment):
    cfg = tiny_cfg(f"experiment={experiment}", "model.detector.backbone.weights=null")
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 3
    module = instantiate(cfg.model)
    assert isinstance(module.detector.head, GFLHead) and isinstance(module.criterion, GFLCriterion)
    assert module.detector.anchors.num_anchors == 1
    assert module.detector.head.box_dim == 68
    assert module.criterion.coder == module.postprocess.coder == DistanceCoder(16, 8.0)
    if experiment == "gfl_r50_1x":
        assert cfg.optim.lr == 0.01 and cfg.data.min_size == 800 and cfg.trainer.max_epochs == 12
        assert module.detector.backbone.out_channels == (512, 1024, 2048)


def test_neon_gfl_mirrors_neon_retinanet_budget(tiny_cfg):
    def groups(experiment):
        cfg = tiny_cfg(f"experiment={experiment}")
        shared = ("data", "optim", "sched", "trainer")
        return {g: OmegaConf.to_container(cfg[g]) for g in shared}, cfg

    retina, retina_cfg = groups("neon_retinanet")
    gfl, gfl_cfg = groups("neon_gfl")
    assert gfl == retina
    assert gfl_cfg.model.detector.backbone == retina_cfg.model.detector.backbone


def test_model_gfl_alone_selects_the_gfl_loss(tiny_cfg):
    cfg = tiny_cfg("model=gfl")
    assert cfg.loss._target_ == "retina.losses.gfl.GFLCriterion"
    assert cfg.model.detector.head._target_ == "retina.model.gfl_head.GFLHead"
    assert "coder" not in cfg.loss  # the model's one coder: model.coder
    assert cfg.model.coder.anchor_scale == cfg.model.detector.anchors.anchor_scale
    focal = "retina.losses.retinanet.RetinaNetCriterion"
    assert tiny_cfg("model=gfl", "loss=focal").loss._target_ == focal  # the command line wins
    assert tiny_cfg("experiment=neon_retinanet").loss._target_ == focal


# ---------------------------------------------------------------- sweeps


def test_focal_optuna_searches_continuous_gamma_and_alpha(tmp_path):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import UniformDistribution

    cfg = compose_run(["hparams_search=focal_optuna"], tmp_path / "run")
    assert cfg.loss._target_ == "retina.losses.retinanet.RetinaNetCriterion"  # experiment=neon_retinanet
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == "val/mAP"
    space, _ = create_params_from_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    assert space == {"loss.gamma": UniformDistribution(0.0, 5.0), "loss.alpha": UniformDistribution(0.1, 0.9)}

    cfg = compose_run(["hparams_search=gfl_optuna"], tmp_path / "run")
    assert cfg.loss._target_ == "retina.losses.gfl.GFLCriterion"
    assert set(cfg.hydra.sweeper.params) == {"loss.beta", "loss.dfl_weight", "loss.giou_weight"}
    for key in cfg.hydra.sweeper.params:  # each a real key of the GFL loss
        assert key.split(".")[1] in cfg.loss
    assert "report" not in cfg and "report" in compose_run([], tmp_path / "run")  # none per trial


def test_slurm_launcher_runs_ddp_with_one_task_per_gpu(tmp_path):
    cfg = compose_run(
        ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], tmp_path / "run")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    assert cfg.trainer.strategy == "ddp"
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"


@pytest.mark.parametrize("overrides, check", [
    (["optim=sgd"], lambda m: isinstance(m.configure_optimizers()["optimizer"], torch.optim.SGD)),
    (["model.no_decay_norm_bias=true"],
     lambda m: m.configure_optimizers()["optimizer"].param_groups[1]["weight_decay"] == 0.0),
    (["sched=multistep"], lambda m: m.configure_optimizers()["lr_scheduler"]["interval"] == "step"),
])
def test_optimizer_options_reach_the_optimizer(tiny_cfg, overrides, check):
    cfg = tiny_cfg("experiment=neon_retinanet", "model.detector.backbone.weights=null", *overrides)
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 1
    module = instantiate(cfg.model)
    module.trainer = types.SimpleNamespace(estimated_stepping_batches=100)  # what fit() sets
    assert check(module)


@pytest.mark.parametrize("overrides", [
    ["data=coco", "data.root=/nowhere"], ["data=voc", "data.root=/nowhere"],
    ["data=yolo", "data.root=/nowhere"], ["debug=overfit"], ["logger=tensorboard"],
    ["logger=[csv,wandb,mlflow]"],
    ["trainer=ddp_cpu"], ["trainer=gpu"], ["sched=multistep", "optim=sgd"],
])
def test_every_config_option_composes(tiny_cfg, overrides):
    cfg = tiny_cfg(*overrides)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    for group in ("optim", "sched"):
        instantiate(cfg[group])  # partials: built without their arguments


@pytest.mark.parametrize("experiment", ["neon_gfl", "neon_retinanet"])
def test_the_embedded_default_is_budgeted_in_epochs_not_wall_time(tmp_path, experiment):
    cfg = compose_run([f"experiment={experiment}"], tmp_path)
    assert cfg.trainer.max_time is None and cfg.trainer.max_epochs == 30
    assert cfg.data.num_workers is None  # chosen by retina.training.cpu_budget
    assert cfg.callbacks.progress._target_ == "retina.training.progress.RunProgressBar"


def test_gfl_is_retinanet_but_for_its_head_anchors_coder_and_nms(tmp_path):
    # model/gfl.yaml extends model/retinanet.yaml: what it does not name is retinanet's
    def model(name):
        cfg = compose_run([f"model={name}", "experiment=retinanet_r50_1x"], tmp_path / name)
        return OmegaConf.to_container(cfg.model, resolve=True)

    gfl, retinanet = model("gfl"), model("retinanet")
    assert gfl["detector"]["head"] == {**retinanet["detector"]["head"],
                                       "_target_": "retina.model.gfl_head.GFLHead",
                                       "group_norm": True, "reg_max": 16}
    assert gfl["detector"]["anchors"] == {**retinanet["detector"]["anchors"], "anchor_scale": 8.0,
                                          "scales_per_octave": 1, "ratios": [1.0]}
    assert gfl["postprocess"] == {**retinanet["postprocess"], "nms_thresh": 0.6}
    assert gfl["coder"]["_target_"] == "retina.ops.boxes.DistanceCoder"
    for part in set(gfl) - {"detector", "postprocess", "coder", "criterion"}:
        assert gfl[part] == retinanet[part], part
    assert {k: v for k, v in gfl["detector"].items() if k not in ("head", "anchors")} == {
        k: v for k, v in retinanet["detector"].items() if k not in ("head", "anchors")}


@pytest.mark.parametrize("loss", ["focal", "softmax_focal", "ohem", "ghm"])
def test_the_background_channel_is_derived_from_the_loss_alone(loss, tiny_cfg):
    from retina.training.run import build

    cfg = tiny_cfg("experiment=neon_retinanet", f"loss={loss}")
    assert "background_class" not in cfg.model.detector.head  # never set by hand
    _, module = build(cfg)
    softmax = loss in ("softmax_focal", "ohem")
    assert module.detector.head.background_class is softmax
    assert cfg.model.detector.head.get("background_class", False) is softmax  # in the checkpoint


def test_a_required_key_left_unset_stops_the_build_naming_it(tiny_cfg):
    from retina.training.run import build

    cfg = tiny_cfg("experiment=retinanet_r50_coco_tv", "data=neon_trees")
    with pytest.raises(ValueError, match=r"this recipe needs model.init_from \(set model.init_from=..."):
        build(cfg)


def test_the_data_configs_leave_the_padding_multiple_to_the_code(tiny_cfg, tmp_path):
    from retina.data.collate import SIZE_DIVISIBLE

    for data in ("coco", "voc", "yolo"):
        assert OmegaConf.load(CONF / "data" / f"{data}.yaml").size_divisible is None
    cfg = tiny_cfg("data.size_divisible=null", "data.size=100")
    datamodule = instantiate(cfg.data)
    datamodule.setup("validate")
    batch = datamodule.collate_fn([datamodule.val_dataset[0]])
    assert batch["images"].shape[-2:] == (SIZE_DIVISIBLE, SIZE_DIVISIBLE)
