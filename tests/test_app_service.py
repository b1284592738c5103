"""The web app as a service: Grad-CAM of one pass equal to the per-task maps, requests batched by the model
thread, and the real page in a subprocess (gradio_client): its file cache cleaned past its age, a burst larger
than its queue refused with "queue full" while the page goes on, and a soak with no per-request growth of the
Python objects in the server."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepart.inference.app import Analyser, load_predictor
from deepart.vis.plots import overlay
from deepart.vis.saliency import grad_cam, predict_with_cams
from tests.conftest import hold_env
from tests.test_app import Server

pytestmark = pytest.mark.slow  # end-to-end: a training and real servers


@pytest.fixture(scope="session")
def predictor(app_run):
    return load_predictor(app_run)[0]


@pytest.fixture(scope="session")
def images(demo_root) -> list[Path]:
    return sorted(demo_root.rglob("*.jpg"))[:6]


def files_under(folder: Path) -> list[Path]:
    """The files under `folder` (os.walk: a subfolder the server removes meanwhile is skipped, not an error)."""
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


def wait_for(condition, what, timeout: float = 300) -> None:
    """Block until condition() is true (a state the server reaches, not a timing); fail after `timeout` s
    saying `what` (a text, or a function giving one then)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what() if callable(what) else what}")
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("layer", ["backbone", "proj"])
def test_one_pass_maps_equal_the_per_task_grad_cam(predictor, images, layer):
    """The maps of one forward pass (every task, a batch of images) are those of pytorch-grad-cam run per task,
    image by image, as the page computed them before; the logits are the model's."""
    model = predictor.model
    x = predictor.preprocess([Image.open(p) for p in images])
    out, cams = predict_with_cams(model, x, layer)
    with torch.no_grad():
        reference = model(x)
    assert set(cams) == set(predictor.tasks) == {"style", "genre", "artist"}
    for task in predictor.tasks:
        torch.testing.assert_close(out["logits"][task], reference["logits"][task], rtol=1e-5, atol=1e-5)
        classes = reference["logits"][task].argmax(-1).tolist()
        for n in range(len(images)):  # alone, as the page ran them
            alone = grad_cam(model, x[n:n + 1], task, classes=[classes[n]], layer=layer)[0]
            assert cams[task][n].shape == alone.shape == tuple(x.shape[-2:])
            np.testing.assert_allclose(cams[task][n], alone, atol=1e-4)
        assert cams[task].std() > 0  # maps, not blanks
    torch.testing.assert_close(out["attention"], reference["attention"], rtol=1e-5, atol=1e-5)


def test_the_pages_panels_are_the_per_task_overlays(predictor, images):
    """The Analyser's pictures: the painting, the attention overlay, and each task's Grad-CAM overlay equal to
    the overlay of the per-task map (pixel values within 1 of 255)."""
    analyse = Analyser(predictor)
    for path in images[:3]:
        result = analyse(path)
        x = predictor.preprocess([Image.open(path).convert("RGB")])
        picture = x[0].permute(1, 2, 0).numpy()
        assert np.array_equal(result.panels[0][0], picture)
        expected = predictor.predict(Image.open(path))
        for (panel, caption), task in zip(result.panels[2:], predictor.tasks):
            assert caption == f"Grad-CAM {task}: {expected[task]['label']}"
            classes = [predictor.tasks[task].index(expected[task]["label"])]
            reference = overlay(picture, grad_cam(predictor.model, x, task, classes=classes)[0])
            assert np.abs(panel.astype(int) - reference.astype(int)).max() <= 1


def test_requests_that_wait_together_run_as_one_batch(predictor, images):
    """Three requests: the first holds the model; the two that arrive meanwhile run together in the next
    batch, and each gets its own answer (the one it gets alone)."""
    analyse = Analyser(predictor, max_batch=8)
    alone = {p: analyse(p) for p in images[:3]}
    start, taken = analyse.worker.batches, analyse.worker.taken
    results: dict[Path, object] = {}
    analyse.lock.acquire()  # the model is busy: the first request's batch waits on it
    try:
        first = threading.Thread(target=lambda: results.__setitem__(images[0], analyse(images[0])))
        first.start()
        wait_for(lambda: analyse.worker.taken == taken + 1, "the first request taken into a batch")
        others = [threading.Thread(target=lambda p=p: results.__setitem__(p, analyse(p))) for p in images[1:3]]
        for t in others:
            t.start()
        wait_for(lambda: analyse.worker.waiting.qsize() == 2, "two requests waiting")
    finally:
        analyse.lock.release()
    for t in [first, *others]:
        t.join(timeout=300)
    assert analyse.worker.batches - start == 2  # three requests, two batches
    for path in images[:3]:
        for task in predictor.tasks:
            got, want = results[path].probabilities[task], alone[path].probabilities[task]
            assert max(abs(got[c] - want[c]) for c in want) < 1e-5
        for (a, _), (b, _) in zip(results[path].panels, alone[path].panels):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------------ the real page
def ask(url: str, image: Path):
    from gradio_client import Client, handle_file

    return Client(url, verbose=False, download_files=False).predict(handle_file(str(image)), api_name="/predict")


def test_the_file_cache_is_cleaned_past_its_age(app_run, images, tmp_path, monkeypatch):
    """With cache_age_s=10 the uploads and the output images are deleted (and their folders) once older than
    that; the example paintings stay, and the page goes on answering. (An age well above a request's longest
    wait: a file past its age goes even while its request waits, and a request here can wait seconds on a busy
    machine.)"""
    pytest.importorskip("gradio_client")
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    srv = Server(app_run, tmp_path / "app.log", "cache_age_s=10").wait()
    try:
        examples = set(files_under(cache))  # the examples, cached at start
        assert len(examples) == 4
        for image in images[:3]:
            assert ask(srv.url, image)[-1].startswith("Predicted in ")
        made = set(files_under(cache)) - examples
        assert made, "the requests left no files in the cache"
        wait_for(lambda: not (set(files_under(cache)) - examples), "the requests' files deleted")
        folders = {p.parent for p in made}
        wait_for(lambda: not any(f.exists() for f in folders), "their folders removed")
        assert set(files_under(cache)) == examples and all(p.is_file() for p in examples)
        assert ask(srv.url, images[3])[-1].startswith("Predicted in ")
    finally:
        srv.stop()


def test_a_burst_past_the_queue_is_refused_and_the_page_goes_on(app_run, images, tmp_path, monkeypatch):
    """concurrency=1, max_queue=2: while the model is held on its first batch, a burst of 8 more requests gets
    2 places in the queue and 6 "queue full" refusals; let go, the held and the queued ones are answered, and so
    is the next request."""
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    hold = tmp_path / "held"
    for key, value in hold_env("app_batch:5", hold).items():  # the 4 warm-up requests pass, the 5th is held
        monkeypatch.setenv(key, value)
    srv = Server(app_run, tmp_path / "app.log", "concurrency=1", "max_queue=2").wait()
    try:
        for image in images[:4]:
            assert ask(srv.url, image)[-1].startswith("Predicted in ")
        clients = [Client(srv.url, verbose=False, download_files=False) for _ in range(9)]
        held = clients[0].submit(handle_file(str(images[0])), api_name="/predict")
        wait_for(hold.exists, "the model thread held on the 5th batch")
        burst = [c.submit(handle_file(str(images[n % len(images)])), api_name="/predict")
                 for n, c in enumerate(clients[1:])]
        refused = []
        wait_for(lambda: sum(job.done() for job in burst) >= 6, "6 of the burst answered while the model is held")
        for job in burst:
            if job.done():
                with pytest.raises(Exception, match="(?i)queue is full"):
                    job.result()
                refused.append(job)
        assert len(refused) == 6
        hold.unlink()
        answers = [held.result(timeout=300)] + [job.result(timeout=300) for job in burst if job not in refused]
        assert len(answers) == 3 and all(a[-1].startswith("Predicted in ") for a in answers)
        assert ask(srv.url, images[5])[-1].startswith("Predicted in ")
    finally:
        if hold.exists():
            hold.unlink()
        srv.stop()


def test_a_soak_leaves_no_per_request_objects_in_the_server(app_run, demo_root, tmp_path, monkeypatch):
    """300 requests from 4 clients: the Python objects alive in the server (after a full collection, read
    through the /debug_memory hook that DEEPART_APP_DEBUG=1 adds) do not grow with the requests: no type with one
    new object per 4 requests, and fewer than 2 new ones per request in all. Gradio keeps
    a copy of the page's config per session (a visitor): the same 4 sessions send every request. The names of
    the cached files are kept as long as the files (cache_age_s=10 here): each reading waits until the
    requests' files are deleted."""
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    monkeypatch.setenv("DEEPART_APP_DEBUG", "1")
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    srv = Server(app_run, tmp_path / "app.log", "concurrency=4", "cache_age_s=10").wait()
    # every request a painting of its own, as visitors send them (Gradio stores a file under the hash of its
    # content: the same few paintings would be a handful of files)
    from PIL import Image

    sources = sorted(demo_root.rglob("*.jpg"))
    pictures = []
    for i in range(400):
        image = Image.open(sources[i % len(sources)]).convert("RGB")
        image.paste((i % 256, i // 256 * 60, 255 - i % 256), (0, 0, 6, 6))
        pictures.append(tmp_path / "paintings" / f"{i:03d}.jpg")
        pictures[-1].parent.mkdir(exist_ok=True)
        image.save(pictures[-1], quality=95)
    clients = [Client(srv.url, verbose=False, download_files=False) for _ in range(4)]
    try:
        def load(n: int) -> None:
            statuses: list[str] = []
            errors: list[str] = []

            def send(k: int) -> None:
                for i in range(n // 4):
                    image = handle_file(str(pictures[(k * n + i) % len(pictures)]))
                    try:
                        statuses.append(clients[k].predict(image, api_name="/predict")[-1])
                    except Exception as exc:  # noqa: BLE001  (named in the assertion below)
                        errors.append(f"{type(exc).__name__}: {exc}")
            threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=900)
            assert not errors, (f"{len(errors)} requests failed, e.g. {errors[0]}; the app's log ends:\n"
                                f"{srv.log.read_text()[-3000:]}")
            assert len(statuses) == n and all(s.startswith("Predicted in ") for s in statuses)

        def settled() -> dict:
            """The report once only the example paintings are left in the cache folder."""
            report: dict = {}

            def only_examples() -> bool:
                report.update(json.loads(clients[0].predict(api_name="/debug_memory")))
                return len(files_under(cache)) == 4 and report["cache_folders"] == 0
            wait_for(only_examples, lambda: f"the requests' files and folders deleted, left: {report} "
                     f"{sorted(str(p.relative_to(cache)) for p in files_under(cache))[:8]}", timeout=120)
            return report

        load(40)  # warm: every lazy import, cache and pool of the first requests
        before = settled()
        load(300)
        after = settled()
        grown = {k: n - before["types"].get(k, 0) for k, n in after["types"].items() if n > before["types"].get(k, 0)}
        # a per-request leak is >= 300 objects of some type; the asyncio timers, contexts and coroutines of the
        # connections open at the moment (and their tuples, cells and functions) come and go by dozens of each,
        # a few hundred in all on a busy machine
        worst = sorted(grown.items(), key=lambda kv: -kv[1])[:12]
        assert max(grown.values(), default=0) < 300 / 4, worst
        assert after["objects"] - before["objects"] < 2 * 300, worst
        assert after["threads"] <= before["threads"] + 4
        assert after["batches"] > before["batches"]
    finally:
        srv.stop()
