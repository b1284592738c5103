"""The web app in a real headless Chromium (Debian's `chromium`, driven by Playwright): open the page, upload
a painting, wait for the labels, compare with the Predictor; a bad upload, then a good one; an example
clicked, a painting dropped on the page and one pasted from the clipboard; the latency from upload to labels
(printed); a screenshot of the page.

    python -m pytest -s tests/test_app_browser.py                                   # the tiny test model
    DEEPART_APP_MODEL=<run dir or .pt> DEEPART_APP_SCREENSHOT=docs/img/app.png \\
        python -m pytest -s tests/test_app_browser.py                               # a real model: docs/evaluation.md

Skipped when Chromium, Playwright or Gradio is missing (.ci/run installs them).
"""
from __future__ import annotations

import base64
import io
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.test_app import Server, paintings, uploads  # noqa: F401  (fixtures; app_run is in conftest)

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip("gradio")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM), args=FLAGS,
                                                        headless=True, viewport={"width": 1280, "height": 1000})
        try:
            yield context.new_page()
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def model_path(app_run) -> Path:  # noqa: F811
    """DEEPART_APP_MODEL (a real model: BENCHMARKS.md's figures) or the tiny model trained for the tests."""
    return Path(os.environ.get("DEEPART_APP_MODEL") or app_run)


def _status(page) -> str:
    return page.inner_text("#status").strip()


def _clear(page) -> None:
    """Remove the painting (when there is one) and wait for the page to empty the results."""
    remove = page.locator("#painting button[aria-label='Remove Image']")
    if remove.count():
        remove.click()
        page.wait_for_function("document.querySelector('#status').innerText.trim() === ''", timeout=TIMEOUT_MS)


def _upload(page, path: Path) -> None:
    """Clear the painting, then upload `path` through the page's file input."""
    _clear(page)
    page.set_input_files("#painting input[type=file]", str(path))


def _drop(page, path: Path) -> None:
    """Clear the painting, then drop `path` on the upload area as a file dragged from the desktop would be."""
    _clear(page)
    transfer = page.evaluate_handle(
        """([data, name]) => { const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
             return transfer; }""", [base64.b64encode(path.read_bytes()).decode(), path.name])
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event("#painting button[aria-label='Drop an image file here to upload']", event,
                            {"dataTransfer": transfer})


def _paste(page, path: Path) -> None:
    """Clear the painting, put `path` on the clipboard as a PNG (as a screenshot tool would), click the page's
    paste button."""
    _clear(page)
    png = io.BytesIO()
    Image.open(path).convert("RGB").save(png, "PNG")
    page.evaluate("""async (data) => { const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                       const blob = new Blob([bytes], {type: 'image/png'});
                       await navigator.clipboard.write([new ClipboardItem({'image/png': blob})]); }""",
                  base64.b64encode(png.getvalue()).decode())
    page.locator("#painting button[aria-label='Paste from clipboard']").click()


def _shown(page, task: str) -> str:
    return page.inner_text(f"#label-{task} [data-testid='label-output-value']").strip()


def _wait_for_labels(page) -> float:
    page.wait_for_function("document.querySelector('#status').innerText.includes('Predicted in')",
                           timeout=TIMEOUT_MS)
    return time.perf_counter()


def test_page_upload_labels_bad_file_latency_screenshot(browser_page, model_path, paintings, uploads,  # noqa: F811
                                                        tmp_path):
    from deepart.inference.app import example_paintings, load_predictor

    page = browser_page
    server = Server(model_path, tmp_path / "app.log").wait()
    try:
        page.goto(server.url, wait_until="networkidle", timeout=TIMEOUT_MS)
        page.wait_for_selector("#painting input[type=file]", state="attached", timeout=TIMEOUT_MS)
        assert "Tasks" in page.inner_text("#model-info") and "style" in page.inner_text("#model-info")

        predictor = load_predictor(model_path)[0]
        painting = example_paintings()[3]  # a 256-px demo painting the page also offers as an example
        expected = predictor.predict(Image.open(painting))
        start = time.perf_counter()
        _upload(page, painting)
        latency = _wait_for_labels(page) - start
        for task in ("style", "genre", "artist"):
            shown = page.inner_text(f"#label-{task} [data-testid='label-output-value']").strip()
            assert shown == expected[task]["label"], task
        assert page.locator("#maps img").count() == 5
        print(f"\nupload -> labels: {latency:.2f} s; the page says: {_status(page)}; model {model_path}")
        shot = Path(os.environ.get("DEEPART_APP_SCREENSHOT") or tmp_path / "app.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000

        # bad files: a clear message on the page, and the app goes on. A name that is not an image's is
        # refused by the page itself; a file named like an image that is not one, by the app.
        _upload(page, uploads / "notes.txt")
        page.get_by_text("Invalid file type: notes.txt").first.wait_for(timeout=TIMEOUT_MS)
        fake = tmp_path / "letter.jpg"
        fake.write_text("Dear curator, this is a letter, not a painting.")
        _upload(page, fake)
        page.wait_for_function("document.querySelector('#status').innerText.includes('Not analysed')",
                               timeout=TIMEOUT_MS)
        assert "letter.jpg is not an image" in _status(page)
        assert server.proc.poll() is None

        good = Path(paintings[1])
        start = time.perf_counter()
        _upload(page, good)
        second = _wait_for_labels(page) - start
        assert page.inner_text("#label-style [data-testid='label-output-value']").strip() == \
            predictor.predict(Image.open(good))["style"]["label"]
        print(f"after a bad upload, upload -> labels: {second:.2f} s")

        _clear(page)  # an example painting, clicked
        page.locator("#examples img").first.click()
        _wait_for_labels(page)
        first_example = example_paintings()[0]
        assert _shown(page, "genre") == predictor.predict(Image.open(first_example))["genre"]["label"]

        dropped = example_paintings()[2]  # dragged from the desktop and dropped on the upload area
        _drop(page, dropped)
        _wait_for_labels(page)
        assert "JPEG" in _status(page)
        for task in ("style", "genre", "artist"):
            assert _shown(page, task) == predictor.predict(Image.open(dropped))[task]["label"], task

        pasted = example_paintings()[1]  # copied to the clipboard as a PNG, then the page's paste button
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url.rstrip("/"))
        _paste(page, pasted)
        _wait_for_labels(page)
        assert "PNG" in _status(page)
        for task in ("style", "genre", "artist"):
            assert _shown(page, task) == predictor.predict(Image.open(pasted).convert("RGB"))[task]["label"], task
    finally:
        server.stop()


def test_similar_paintings_panel_shows_the_neighbours_thumbnails(browser_page, model_path, demo_root, tmp_path):
    from deepart.inference.index import build_index, parse_args

    index = build_index(parse_args([f"model={model_path}", f"images={demo_root}", f"out={tmp_path / 'index'}",
                                    "num_workers=0"]))
    painting = Path(index.files["path"].iloc[3])
    page = browser_page
    server = Server(model_path, tmp_path / "app.log", f"index={index.folder}", "similar_k=6").wait()
    try:
        page.goto(server.url, wait_until="networkidle", timeout=TIMEOUT_MS)
        page.wait_for_selector("#painting input[type=file]", state="attached", timeout=TIMEOUT_MS)
        _upload(page, painting)
        _wait_for_labels(page)
        page.wait_for_function("document.querySelectorAll('#similar img').length === 6", timeout=TIMEOUT_MS)
        captions = page.locator("#similar .caption-label").all_inner_texts()
        assert len(captions) == 6, captions
        similarities = [float(c.split()[0]) for c in captions]
        assert similarities == sorted(similarities, reverse=True), captions
        assert f"1.00 {painting.name}" in captions, captions  # the painting itself, at cosine similarity 1
        assert all(Path(c.split()[1]).suffix == ".jpg" for c in captions)
    finally:
        server.stop()
