"""ONNX: every sequencer exports with named outputs and a dynamic batch, and onnxruntime agrees with PyTorch on the
demo val images (max |logit difference| <= 1e-4, every top-1 the same); predict backend=onnx over a folder."""
import json

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e '.[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install -e '.[onnx]')")

from deepart.data.dataset import SkipCounter  # noqa: E402
from deepart.data.loaders import load_table  # noqa: E402
from deepart.inference.export import export, parse_args  # noqa: E402
from deepart.inference.loading import Predictor  # noqa: E402
from deepart.inference.onnxrt import OnnxModel  # noqa: E402
from deepart.inference.pretrained import ONNX_FILE  # noqa: E402
from tests.conftest import compose_config, demo_overrides  # noqa: E402
from tests.test_export import SEQUENCERS, cli, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)


@pytest.fixture(scope="module")
def val_paths(demo_root):
    table = load_table(compose_config(demo_overrides(demo_root)).data)
    return [str(table.resolve(p)) for p in table.frame("val")["path"]]


@pytest.mark.parametrize("sequencer", SEQUENCERS)
def test_onnxruntime_agrees_with_pytorch_on_the_demo_val_images(sequencer, demo_root, val_paths, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "best.pt", sequencer, demo_root, seed=1)
    out = export(parse_args([f"ckpt={ckpt}", f"out={tmp_path / 'export'}", "metrics=none", "onnx=true"]))
    config = json.loads((out / "config.json").read_text())
    assert config["onnx"]["exporter"] in ("dynamo", "torchscript")
    assert f"exported with the {config['onnx']['exporter']} exporter" in capsys.readouterr().out
    torch_predictor = Predictor.from_pretrained(out, device="cpu")
    runner = OnnxModel(out / ONNX_FILE, torch_predictor.tasks, torch_predictor.model.input_cfg)
    expected = [f"logits_{t}" for t in torch_predictor.tasks] + ([] if sequencer == "pool" else ["attention"])
    assert runner.outputs == expected
    diffs, agree, n = [], [], 0
    skips = SkipCounter()
    # batches of 16 and a last, smaller one: the batch dimension is dynamic
    for batch, out_torch in torch_predictor.batches(val_paths, 16, 0, skips):
        out_onnx = runner(batch["image"])
        n += len(batch["image"])
        for task in torch_predictor.tasks:
            a, b = out_torch["logits"][task], out_onnx["logits"][task]
            diffs.append(float((a - b).abs().max()))
            agree.append(bool((a.argmax(-1) == b.argmax(-1)).all()))
        if sequencer != "pool":
            np.testing.assert_allclose(out_onnx["attention"].numpy(), out_torch["attention"].numpy(), atol=1e-5)
    assert n > 0, "no demo val image was read"
    print(f"{sequencer}: {n} demo val images, exporter {config['onnx']['exporter']}, "
          f"max |logit diff| {max(diffs):.2e}, top-1 agreement {100 * np.mean(agree):.0f} %")
    assert skips.total == 0 and n == len(val_paths) and n % 16 != 0
    assert max(diffs) <= 1e-4
    assert all(agree)


def test_predict_backend_onnx_matches_torch_over_a_folder(demo_root, tmp_path):
    ckpt = save_checkpoint(tmp_path / "best.pt", "pool", demo_root)
    out = export(parse_args([f"ckpt={ckpt}", f"out={tmp_path / 'export'}", "metrics=none", "onnx=true"]))
    images = tmp_path / "paintings"
    images.mkdir()
    for p in sorted(demo_root.rglob("*.jpg"))[:5]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.jpg").write_bytes(b"not a jpeg" * 10)
    results = {}
    for backend in ("torch", "onnx"):
        res = cli("deepart predict", f"ckpt={out}", f"images={images}", f"backend={backend}", "batch_size=2",
                  "num_workers=0", "threads=1", f"out_dir={tmp_path / backend}")
        assert res.returncode == 0, res.stderr[-3000:]
        assert "5 images predicted, 1 unreadable skipped" in res.stdout
        payload = json.loads((tmp_path / backend / "predictions.json").read_text())
        assert payload["backend"] == backend and (tmp_path / backend / "predictions.csv").is_file()
        results[backend] = payload["predictions"]
    for a, b in zip(results["torch"], results["onnx"]):
        assert a["image"] == b["image"]
        for task, p in a["predictions"].items():
            assert p["label"] == b["predictions"][task]["label"]
            assert p["confidence"] == pytest.approx(b["predictions"][task]["confidence"], abs=1e-5)
