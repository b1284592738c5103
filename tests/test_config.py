"""Every option of every config group composes and instantiates; bad options fail clearly."""
import pytest
import torch
from hydra.errors import ConfigCompositionException

from deepart.core.config import build, config_groups, group_options, phase_plan, quote_numeric_choices, validate
from deepart.core.errors import ConfigError
from deepart.data.loaders import load_table, train_loader
from deepart.models import build_model
from deepart.training.checks import check_config
from deepart.training.freezing import apply_freezing
from deepart.training.optim import build_optimizer
from tests.conftest import TINY, compose_config, demo_overrides, run_script

GROUP_OPTIONS = [(g, o) for g in config_groups() for o in group_options(g)]


def test_every_group_has_options():
    assert {"backbone", "sequencer", "loss", "phase", "sampler", "data", "logger", "experiment"} <= set(config_groups())
    assert {"efficientnet_b4", "efficientnet_b0", "tf_efficientnet_lite0", "resnet18", "resnet34", "resnet50",
            "convnext_tiny"} <= set(group_options("backbone"))
    assert set(group_options("sequencer")) >= {"bilstm", "gru", "transformer", "pool"}
    assert set(group_options("loss")) >= {"focal", "ce", "label_smoothing"}
    assert set(group_options("phase")) >= {"1", "2", "3", "all"}


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_option_composes_and_instantiates(group, option, demo_root):
    overrides = [*demo_overrides(demo_root), *TINY]
    if group == "backbone":
        overrides = [o for o in overrides if not o.startswith("backbone.name")]
    if group in ("data", "experiment") and option != "demo":
        pytest.skip(f"{group}={option} needs its dataset on disk; covered by the data tests")
    overrides.append(f"{group}={option}")
    if (group, option) == ("sequencer", "none"):  # the heads read texture statistics alone
        overrides.append("texture=meanstd")
    if group == "experiment":
        overrides = [o for o in overrides if not o.startswith(("phase", "data.image_size", "data.resize_size"))]
    cfg = compose_config(overrides)
    if cfg.sequencer.encoder is not None and group != "sequencer" and group != "experiment":
        cfg.sequencer.encoder.hidden_size = 16
    validate(cfg)
    table = load_table(cfg.data)
    model = build_model(cfg, table.tasks)
    loss_fn = build(cfg.loss, tasks=table.tasks)
    logger = build(cfg.logger)
    assert hasattr(logger, "log_metrics")
    for phase in phase_plan(cfg):
        apply_freezing(model, list(phase.freeze), phase.freeze_stages)
        opt = build_optimizer(cfg.optimizer, [model, loss_fn], phase.lr, torch.device("cpu"))
        assert opt.param_groups[0]["lr"] == phase.lr
        loader = train_loader(table, cfg.data, cfg.sampler, phase.batch_size, cfg.seed, "cpu")
        batch = next(iter(loader))
        if group in ("backbone", "sequencer", "experiment"):
            out = model(batch["image"])
            assert set(out["logits"]) == set(table.tasks)


def test_numeric_phase_choices_are_quoted():
    assert quote_numeric_choices(["phase=2", "phase=1,2,3", "loss.gamma=1,2", "+phase=3"], ["phase"]) == \
        ["phase='2'", "phase='1','2','3'", "loss.gamma=1,2", "+phase='3'"]
    assert compose_config(["phase=2"]).phase.lr == 5e-4


def test_default_is_one_phase_with_everything_trainable():
    plan = phase_plan(compose_config([]))
    assert [(p.name, list(p.freeze), p.freeze_stages, p.lr, p.epochs, p.batch_size) for p in plan] == \
        [("full", [], 0, 5e-4, 30, 32)]
    paintings = phase_plan(compose_config(["experiment=paintings"]))
    assert [(p.name, p.epochs) for p in paintings] == [("full", 6)]
    chain = phase_plan(compose_config(["experiment=paintings", "phase=all", "phase.epochs=2"]))
    assert [(p.name, p.epochs) for p in chain] == [("1", 2), ("2", 2), ("3", 2)]


def test_phase_all_chains_the_phase_files():
    cfg = compose_config(["phase=all"])
    plan = phase_plan(cfg)
    assert [(p.name, p.lr, p.epochs, p.batch_size) for p in plan] == \
        [("1", 1e-3, 20, 64), ("2", 5e-4, 30, 32), ("3", 1e-5, 20, 32)]
    short = phase_plan(compose_config(["phase=all", "phase.epochs=1"]))
    assert [p.epochs for p in short] == [1, 1, 1] and short[1].lr == 5e-4


@pytest.mark.parametrize("override,key", [
    ("loss.weighting=median", "loss.weighting"),
    ("loss.gamma=-1", "loss.gamma"),
    ("phase.freeze=[backbone,wings]", "phase.freeze"),
    ("phase.epochs=0", "phase.epochs"),
    ("trainer.precision=fp8", "trainer.precision"),
    ("data.train_crop_scale=[0.9,0.1]", "data.train_crop_scale"),
    ("trainer.device=gpu", "trainer.device"),
    ("trainer.threads=0", "trainer.threads"),
])
def test_impossible_values_name_the_key(override, key):
    cfg = compose_config([*TINY, override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_unknown_keys_and_options_are_refused():
    with pytest.raises(ConfigCompositionException):
        compose_config(["loss.gama=2"])
    with pytest.raises(ConfigCompositionException, match="focal"):
        compose_config(["loss=nope"])
    with pytest.raises(ConfigCompositionException):
        compose_config(["loss=ce", "loss.gamma=2"])  # gamma belongs to focal only


@pytest.mark.slow
def test_cli_errors_are_short_and_name_the_problem(tmp_path):
    res = run_script("train.py", "loss=nope", f"hydra.run.dir={tmp_path}/a")
    assert res.returncode != 0
    assert "Available options in 'loss'" in res.stderr and "focal" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_script("train.py", "loss.weighting=median", "data=demo", f"hydra.run.dir={tmp_path}/b")
    assert res.returncode == 2
    assert "loss.weighting='median' is not allowed: expected uncertainty | equal" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_impossible_freeze_stages_in_phase_3_of_a_chain_fails_at_start_up(tmp_path):
    """Checked against the chosen backbone for every phase before anything is built or read: the demo data is
    never generated, phase 1 never starts, and the one error line names the key."""
    data_root = tmp_path / "demo-never-generated"
    res = run_script("train.py", "experiment=demo", "logger=none", f"data.root={data_root}", "phase=all",
                     "phase.epochs=1", "phase.chain.p3.freeze_stages=9", f"hydra.run.dir={tmp_path}/run")
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    errors = [line for line in out.splitlines() if "freeze_stages" in line]
    assert len(errors) == 1 and errors[0].endswith(
        "phase.chain.p3.freeze_stages=9 is not allowed: expected 0..5 (backbone 'small_cnn' has 5 stages)."), out
    assert "Traceback" not in out and "phase 1" not in out and "epoch" not in out
    assert not data_root.exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("override, key", [
    ("sequencer.encoder.cell=rnn", "sequencer.encoder.cell"),
    ("backbone=resnet18 backbone.name=nonet", "backbone.name"),
    ("backbone.weights=/no/such/weights.pth", "backbone.weights"), ("data.cache=sometimes", "data.cache"),
    ("data.source.missing_images=drop", "data.source.missing_images"), ("sampler.tasks=[medium]", "sampler.tasks"),
    ("sampler.tasks=[]", "sampler.tasks")])
def test_every_group_is_checked_before_any_data_is_read(tmp_path, override, key):
    """The start-up check builds nothing that needs data or weights: the demo folder is never generated."""
    data_root = tmp_path / "demo-never-generated"
    cfg = compose_config(["experiment=demo", "logger=none", f"data.root={data_root}", *override.split()])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(cfg)
    assert not data_root.exists()


def test_the_start_up_check_returns_the_run_plan():
    plan = check_config(compose_config(["experiment=demo", "phase=all", "phase.epochs=2"]))
    assert [p.name for p in plan.phases] == ["1", "2", "3"] and all(p.epochs == 2 for p in plan.phases)
    assert plan.keys == ("phase.chain.p1", "phase.chain.p2", "phase.chain.p3")
    assert (plan.backbone, plan.stages) == ("small_cnn", 5)
    assert plan.eval_batch_size(compose_config(["experiment=demo", "phase=all"])) == 2 * plan.phases[-1].batch_size


@pytest.mark.parametrize("override,key", [("lr_finder.num_steps=2", "lr_finder.num_steps"),
                                          ("optimizer.backbone_lr_scale=0", "optimizer.backbone_lr_scale")])
def test_values_used_later_are_checked_at_start_up(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose_config([*TINY, "lr_find=true", override]))
