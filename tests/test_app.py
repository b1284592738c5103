"""The web app (python -m deepart app): the analysis of one upload, bad uploads, and the page served in a
subprocess on localhost, called with gradio_client (two requests at once included)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.app_load import AppServer
from deepart.core.errors import CheckpointError, ConfigError
from deepart.inference.app import Analyser, BadImage, card_top1, load_predictor, parse_args
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def paintings(demo_root) -> list[Path]:
    return sorted(demo_root.rglob("*.jpg"))[:3]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path: Path, width: int = 20_000, height: int = 10_000) -> Path:
    """A valid grey PNG of width x height (200 megapixels by default), written without holding it in memory."""
    row, comp = b"\x00" * (1 + width), zlib.compressobj(1)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))
    return path


BAD = {  # kind -> (file name, what the message says)
    "not an image": ("notes.txt", "is not an image"),
    "empty file": ("empty.jpg", "is an empty file"),
    "200 megapixels": ("huge.png", "200 megapixels"),
    "truncated": ("cut.jpg", "could not be decoded"),
}
VALID = ("cmyk.jpg", "sixteen_bit.png", "alpha.png", "animated.gif")


@pytest.fixture(scope="session")
def uploads(paintings, tmp_path_factory) -> Path:
    """Every bad kind of upload, and valid images in awkward modes, made from a demo painting."""
    folder = tmp_path_factory.mktemp("uploads")
    source = Image.open(paintings[0]).convert("RGB")
    (folder / "notes.txt").write_text("this is a text file, not a painting\n")
    (folder / "empty.jpg").write_bytes(b"")
    huge_png(folder / "huge.png")
    (folder / "cut.jpg").write_bytes(paintings[0].read_bytes()[:400])
    source.convert("CMYK").save(folder / "cmyk.jpg")
    grey16 = (np.asarray(source.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(folder / "sixteen_bit.png")
    rgba = source.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(source.size))
    rgba.save(folder / "alpha.png")
    frames = [source.convert("P"), source.rotate(90).convert("P")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return folder


@pytest.fixture(scope="session")
def predictor_info(app_run):
    return load_predictor(app_run)


# ------------------------------------------------------------------------------------------------ level 1: the function
def test_analysis_per_task_matches_the_predictor(predictor_info, paintings):
    predictor, info = predictor_info
    analyse = Analyser(predictor, top_k=5)
    size = predictor.model.input_cfg["image_size"]
    for path in paintings:
        result = analyse(path)
        expected = predictor.predict(Image.open(path))
        assert set(result.probabilities) == set(predictor.tasks) == {"style", "genre", "artist"}
        for task, classes in predictor.tasks.items():
            probs = result.probabilities[task]
            assert set(probs) == set(classes) and abs(sum(probs.values()) - 1) < 1e-4
            assert len(result.top[task]) == min(5, len(classes))
            assert result.top[task][0][0] == expected[task]["label"] == max(probs, key=probs.get)
        # the painting, the attention overlay, one Grad-CAM per task: all the model's input size, RGB
        assert [c.split(":")[0] for _, c in result.panels] == [
            "the painting as the model sees it", "attention", "Grad-CAM style", "Grad-CAM genre", "Grad-CAM artist"]
        assert all(p.shape == (size, size, 3) and p.dtype == np.uint8 for p, _ in result.panels)
        assert not np.array_equal(result.panels[0][0], result.panels[2][0])  # the overlay changed the picture
        assert 0 < result.seconds < 60


def test_model_info_names_tasks_backbone_and_val_top1(predictor_info, app_run):
    _, info = predictor_info
    text = info.markdown()
    assert "test_efficientnet" in text and "style (8 classes)" in text and "artist (6 classes)" in text
    assert info.top1_source == "checkpoint" and set(info.val_top1) == {"style", "genre", "artist"}
    assert all(0 <= v <= 100 for v in info.val_top1.values()) and "Val top-1" in text


def test_val_top1_comes_from_the_model_card_when_there_is_one(app_run, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "best.pt").write_bytes((app_run / "checkpoints" / "best.pt").read_bytes())
    (folder / "README.md").write_text(
        "---\nlicense: mit\nmodel-index:\n- name: deepart\n  results:\n"
        "  - task: {type: image-classification, name: style}\n    metrics:\n"
        "    - {type: accuracy, name: val top-1, value: 0.525}\n"
        "  - task: {type: image-classification, name: genre}\n    metrics:\n"
        "    - {type: accuracy, name: val top-1, value: 61.0}\n---\n# deepart\n")
    _, info = load_predictor(folder)  # a folder with best.pt and its model card, as in a Space
    assert info.top1_source == "model card" and info.val_top1 == {"style": 52.5, "genre": 61.0}
    assert "model card" in info.markdown()
    (folder / "README.md").write_text("# no front matter\n")
    assert card_top1(folder / "README.md") == {}


def test_an_export_folder_loads_with_its_model_cards_top1(app_run, tmp_path):
    from deepart.inference.export import main as export_main

    folder = export_main([f"ckpt={app_run}", f"out={tmp_path / 'export'}"])
    predictor, info = load_predictor(folder)
    stored = json.loads((app_run / "metrics.json").read_text())["best"]
    assert info.top1_source == "model card"
    assert info.val_top1 == pytest.approx({t: round(stored[f"val/{t}/top1"], 4) * 100 for t in predictor.tasks})


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_upload_is_one_clear_message(predictor_info, uploads, kind):
    name, message = BAD[kind]
    with pytest.raises(BadImage, match=message) as err:
        Analyser(predictor_info[0])(uploads / name)
    assert str(err.value).startswith(name) and "\n" not in str(err.value) and "Traceback" not in str(err.value)


@pytest.mark.parametrize("name", VALID)
def test_awkward_but_valid_images_are_predicted(predictor_info, uploads, name):
    predictor, _ = predictor_info
    result = Analyser(predictor)(uploads / name)
    assert all(abs(sum(p.values()) - 1) < 1e-4 for p in result.probabilities.values())
    assert result.panels[0][0].shape[2] == 3
    assert ("2 frames: the first one is analysed" in result.note) == (name == "animated.gif")


def test_run_dir_without_a_checkpoint_and_bad_options_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="neither an export folder .* nor a run dir"):
        load_predictor(tmp_path)
    with pytest.raises(ConfigError, match="model=... is required"):
        parse_args([])
    with pytest.raises(ConfigError, match="conf/app.yaml"):
        parse_args(["model=x.pt", "colour=red"])
    with pytest.raises(ConfigError, match="concurrency"):
        parse_args(["model=x.pt", "concurrency=0"])
    cfg = parse_args(["model=x.pt"])
    assert cfg.host == "127.0.0.1" and cfg.share is False and cfg.port == 7860


def test_command_without_model_says_so_in_one_line():
    res = subprocess.run([sys.executable, "-m", "deepart", "app"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "model=... is required" in lines[0], res.stderr


# ----------------------------------------------------------------------------------------------- level 2: a real server
class Server(AppServer):
    """`python -m deepart app` of this checkout in a subprocess on a free localhost port, until stopped, with the
    environment's Gradio cache (tests point GRADIO_TEMP_DIR at theirs)."""

    start_timeout_s, stop_timeout_s = 180, 20
    failure = AssertionError

    def __init__(self, model: Path, log: Path, *extra: str):
        super().__init__(model, REPO, log, list(extra), own_cache=False)


@pytest.fixture(scope="session")
def server(app_run, tmp_path_factory):
    pytest.importorskip("gradio")
    pytest.importorskip("gradio_client")
    srv = Server(app_run, tmp_path_factory.mktemp("app_server") / "app.log").wait()
    yield srv
    srv.stop()


def test_server_binds_localhost_and_answers_like_the_predictor(server, predictor_info, paintings):
    from gradio_client import Client, handle_file

    predictor, _ = predictor_info
    client = Client(server.url, verbose=False)
    *labels, gallery, status = client.predict(handle_file(str(paintings[0])), api_name="/predict")
    expected = predictor.predict(Image.open(paintings[0]))
    for task, label in zip(predictor.tasks, labels):
        assert label["label"] == expected[task]["label"]
        assert len(label["confidences"]) == 5 and label["confidences"][0]["label"] == expected[task]["label"]
        assert abs(label["confidences"][0]["confidence"] - expected[task]["confidence"]) < 1e-4
    assert len(gallery) == 5 and all(Path(g["image"]).is_file() for g in gallery)
    assert status.startswith("Predicted in ") and "JPEG" in status
    assert "127.0.0.1" in server.log.read_text()


def test_server_answers_bad_uploads_with_their_message_and_keeps_serving(server, uploads, paintings):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    for name, message in BAD.values():
        *labels, gallery, status = client.predict(handle_file(str(uploads / name)), api_name="/predict")
        assert status.startswith(f"**Not analysed:** {name}") and message in status, status
        assert all(label is None or not label.get("label") for label in labels) and not gallery
        *labels, _, status = client.predict(handle_file(str(paintings[1])), api_name="/predict")
        assert status.startswith("Predicted in ") and all(label["label"] for label in labels)
    for name in VALID:
        *labels, _, status = client.predict(handle_file(str(uploads / name)), api_name="/predict")
        assert status.startswith("Predicted in ") and all(label["label"] for label in labels), name


def test_two_requests_at_once_are_both_answered(server, predictor_info, paintings):
    from gradio_client import Client, handle_file

    predictor, _ = predictor_info
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        labels = Client(server.url, verbose=False).predict(handle_file(str(paintings[i])), api_name="/predict")
        answers[i] = labels[0]["label"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert answers == {i: predictor.predict(Image.open(paintings[i]))["style"]["label"] for i in (1, 2)}


def test_uploads_over_max_file_mb_are_refused_and_the_app_goes_on(app_run, paintings, tmp_path):
    pytest.importorskip("gradio")
    httpx = pytest.importorskip("httpx")
    from gradio_client import Client, handle_file

    big = tmp_path / "noise.png"  # 3 MB: random pixels do not compress
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 2 * 2**20
    srv = Server(app_run, tmp_path / "app.log", "max_file_mb=1").wait()
    try:
        with big.open("rb") as handle:  # the server itself refuses it, whatever the client
            refused = httpx.post(f"{srv.url}gradio_api/upload", files={"files": (big.name, handle)}, timeout=60)
        assert refused.status_code == 413 and "1048576 bytes" in refused.text
        client = Client(srv.url, verbose=False)
        with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
            client.predict(handle_file(str(big)), api_name="/predict")
        *labels, _, status = client.predict(handle_file(str(paintings[0])), api_name="/predict")
        assert status.startswith("Predicted in ") and all(label["label"] for label in labels)
    finally:
        srv.stop()
