"""Every command answers --help: train.py with the config groups and their options (Hydra's app help,
conf/hydra/help/train.yaml), eval.py with its options, and each `python -m deepart <command>` with its keys; each
points to its reference page."""
from __future__ import annotations

import pytest

from deepart.core import yamldoc
from deepart.core.config import CONF_DIR, config_groups, group_options
from tests.conftest import run_script


@pytest.mark.slow
def test_train_help_lists_every_group_and_option_and_the_reference():
    proc = run_script("train.py", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    for group in [g for g in config_groups() if g != "hydra"] + ["hydra/launcher"]:
        line = next((x for x in lines if x.startswith(f"{group}: ")), None)
        assert line is not None, f"{group} is not listed:\n{proc.stdout}"
        assert all(option in line for option in group_options(group)), line
    assert "docs/reference/config.md" in proc.stdout


@pytest.mark.slow
def test_eval_help_needs_no_checkpoint_and_lists_the_options():
    proc = run_script("eval.py", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    keys = [k.path for k in yamldoc.read(CONF_DIR / "eval.yaml").keys if "." not in k.path and k.path != "hydra"]
    assert all(f"{key}:" in proc.stdout for key in keys), proc.stdout
    assert "docs/reference/commands.md" in proc.stdout


@pytest.mark.parametrize("command", ["predict", "export", "app", "index", "similar"])
def test_a_command_help_lists_its_keys(command, capsys):
    import importlib

    from deepart.__main__ import COMMANDS

    module = importlib.import_module(COMMANDS[command][0])
    with pytest.raises(SystemExit) as stopped:
        module.main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0
    assert out.startswith(f"usage: python -m deepart {command} ") and "docs/reference/commands.md" in out
    for key in [k for k in yamldoc.read(CONF_DIR / f"{command}.yaml").keys if not yamldoc.is_section(k)]:
        assert f"  {key.path} " in out, f"{key.path} missing from:\n{out}"
