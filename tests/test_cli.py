"""The package's commands (`python -m deepart <command>`) and the one key for where a dataset is (`data.root`)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepart.core.checkpoint import upgrade_config
from deepart.core.config import compose_config
from deepart.core.errors import ConfigError
from deepart.data.loaders import data_root, set_data_root
from tests.conftest import REPO, run_script


def deepart_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "deepart", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_python_m_deepart_lists_its_commands_and_refuses_an_unknown_one():
    res = deepart_cli()
    assert res.returncode == 0
    for command in ("predict", "export", "app", "report", "download", "prepare"):
        assert f"  {command} " in res.stdout
    bad = deepart_cli("pridict")
    assert bad.returncode == 2 and "unknown command 'pridict'" in bad.stderr


@pytest.mark.parametrize("command, needle", [("predict", "ckpt=... is required"), ("export", "ckpt=... is required"),
                                             ("report", "usage:")])
@pytest.mark.slow
def test_each_command_runs_its_module(command, needle):
    res = deepart_cli(command)
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("old", ["data.source.root", "data.image_dir", "data.parquet"])
def test_old_spellings_of_the_data_root_are_refused_with_the_new_key(old):
    with pytest.raises(ConfigError, match=rf"^{old} is now data.root .*: pass data.root=/x$"):
        compose_config(["data=csv", f"{old}=/x"])


@pytest.mark.slow
def test_train_py_refuses_data_source_root_before_writing_anything(tmp_path):
    res = run_script("train.py", "experiment=demo", "logger=none", f"data.source.root={tmp_path / 'demo'}",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 2
    assert f"data.source.root is now data.root (where the dataset is, one key for every data option): pass " \
           f"data.root={tmp_path / 'demo'}" in res.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "demo").exists()


@pytest.mark.parametrize("option, source_key", [("wikiart", "root"), ("demo", "root"), ("imagefolder", "root"),
                                                ("csv", "image_dir"), ("hf_wikiart", "parquet")])
def test_every_data_option_reads_its_folder_from_data_root(option, source_key):
    extra = ["data.table=t.csv"] if option == "csv" else []
    cfg = compose_config([f"data={option}", "data.root=/somewhere", *extra])
    assert cfg.data.source[source_key] == "/somewhere" and data_root(cfg.data) == "/somewhere"


def test_a_config_saved_before_data_root_gets_it_and_can_be_pointed_elsewhere():
    from omegaconf import OmegaConf

    old = {"data": {"source": {"_target_": "deepart.data.tabular.load_csv", "table": "t.csv",
                               "image_dir": "/old/images"}, "tasks": None}}
    new = upgrade_config(old)
    assert new["data"]["root"] == "/old/images"
    data = OmegaConf.create(new["data"])
    set_data_root(data, "/new/images")
    assert data.root == "/new/images" and data.source.image_dir == "/new/images"
