"""Getting the WikiArt images from what exists today, through the real CLI: a damaged zip, a tar.gz, an
extracted folder; unsafe members; a kill -9 in the middle of an extraction; `--check`."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deepart.data.wikiart import load_wikiart
from tests.conftest import REPO, hold_env, wait_until_held
from tests.wikiart_copies import jpeg, labels_root, make_tar, make_tree, make_zip, stored_names

pytestmark = pytest.mark.slow  # end-to-end: real commands and trainings (python -m pytest -m "not slow" skips them)

NAMES = stored_names()
BAD_CRC, CUT = NAMES[0], NAMES[5]  # Realism/ilya-repin_horse.jpg, Art_Nouveau_Modern/nicholas-roerich_...


def cli(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DEEPART_KILL_AT"}
    if kill_at:
        env["DEEPART_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "deepart.data.download", "wikiart", *args, "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def on_disk(images: Path) -> set[str]:
    return {p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()}


def test_damaged_zip_gives_a_dataset(tmp_path):
    root = labels_root(tmp_path / "wikiart")
    archive = make_zip(tmp_path / "wikiart.zip", bad_crc=BAD_CRC, cut_short=CUT)
    proc = cli("--root", str(root), "--from", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert f"extracted 20 of 22 files; 2 damaged (listed in {root / 'damaged_images.csv'})" in proc.stdout
    damaged = (root / "damaged_images.csv").read_text()
    assert f"{BAD_CRC},bad CRC-32" in damaged and f"{CUT},cut short" in damaged
    assert on_disk(root / "images") == set(NAMES) - {BAD_CRC, CUT}  # nothing corrupt left behind
    assert (root / "images" / NAMES[1]).read_bytes() == jpeg(1)
    assert archive.is_file()  # --from never deletes the user's file

    # training data: the damaged images are left out and counted per task and split, no missing_images=skip
    table = load_wikiart(root)
    note = next(n for n in table.notes if n.startswith("damaged in the archive"))
    assert "style 2 train / 0 val; genre 1 train / 0 val; artist 2 train / 0 val" in note
    assert not {BAD_CRC, CUT} & (set(table.train["path"]) | set(table.val["path"]))

    check = cli("--root", str(root), "--check")
    assert check.returncode == 1  # 2 of 11 style-train images absent: over the 1% threshold
    assert "style   train      11       9       2       0  BADLY INCOMPLETE" in check.stdout
    assert "style train damaged: " in check.stdout and BAD_CRC in check.stdout
    assert cli("--root", str(root), "--check", "--max-absent", "0.5").returncode == 0


def test_tar_gz_and_plain_tar(tmp_path):
    for mode, name in (("w:gz", "wikiart.tar.gz"), ("w", "wikiart.tar")):
        root = labels_root(tmp_path / name / "root")
        proc = cli("--root", str(root), "--from", str(make_tar(tmp_path / name / name, mode)))
        assert proc.returncode == 0, proc.stderr
        assert "extracted 22 of 22 files" in proc.stdout and "damaged" not in proc.stdout
        assert on_disk(root / "images") == set(NAMES)
        check = cli("--root", str(root), "--check")
        assert check.returncode == 0 and "BADLY" not in check.stdout, check.stdout


def test_cut_tar_gz_extracts_what_precedes_the_break(tmp_path):
    data = make_tar(tmp_path / "full.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) * 2 // 3])
    root = labels_root(tmp_path / "root")
    proc = cli("--root", str(root), "--from", str(tmp_path / "cut.tar.gz"))
    assert proc.returncode == 0, proc.stderr
    assert "the archive breaks off after that" in proc.stdout
    got = on_disk(root / "images")
    assert 0 < len(got) < len(NAMES) and all((root / "images" / n).read_bytes() == jpeg(NAMES.index(n)) for n in got)


@pytest.mark.parametrize("top", ["", "wikiart"])
def test_folder_is_used_in_place(tmp_path, top):
    copy = make_tree(tmp_path / "kaggle" / top if top else tmp_path / "kaggle")
    root = labels_root(tmp_path / "root")
    proc = cli("--root", str(root), "--from", str(tmp_path / "kaggle"))
    assert proc.returncode == 0, proc.stderr
    assert (root / "images").is_symlink() and (root / "images").resolve() == copy.resolve()
    assert cli("--root", str(root), "--check").returncode == 0
    assert len(load_wikiart(root).val) == 15


def test_folder_without_style_folders_is_named(tmp_path):
    (tmp_path / "photos" / "holiday").mkdir(parents=True)
    (tmp_path / "photos" / "notes.txt").write_text("x")
    proc = cli("--root", str(labels_root(tmp_path / "root")), "--from", str(tmp_path / "photos"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "does not hold the WikiArt style folders" in proc.stderr and "holiday/, notes.txt" in proc.stderr


def test_unsafe_tar_members_are_refused_by_name(tmp_path):
    link = tarfile.TarInfo("wikiart/Baroque/evil-link.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("wikiart/Baroque/hard.jpg")
    hard.type, hard.linkname = tarfile.LNKTYPE, "wikiart/Realism/ilya-repin_horse.jpg"
    climb = tarfile.TarInfo("wikiart/../../escaped.jpg")
    climb.size = 10
    absolute = tarfile.TarInfo("/tmp/absolute.jpg")
    absolute.size = 10
    archive = make_tar(tmp_path / "evil.tar", "w", extra=[link, hard, climb, absolute])
    root = labels_root(tmp_path / "a" / "root")
    proc = cli("--root", str(root), "--from", str(archive))
    assert proc.returncode == 0, proc.stderr
    for name, why in (("wikiart/Baroque/evil-link.jpg", "a link (to '/etc/passwd')"),
                      ("wikiart/../../escaped.jpg", "climbs out"), ("/tmp/absolute.jpg", "absolute path")):
        assert f"refused member {name!r}: {why}" in proc.stdout
    assert "hard.jpg" in proc.stdout
    assert not (tmp_path / "escaped.jpg").exists() and not (tmp_path / "a" / "escaped.jpg").exists()
    assert not list((root / "images").rglob("evil-link.jpg")) and not list((root / "images").rglob("hard.jpg"))
    assert on_disk(root / "images") == set(NAMES)


def test_unsafe_zip_members_are_refused_by_name(tmp_path):
    import zipfile

    archive = make_zip(tmp_path / "w.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("wikiart/../../escaped.jpg", b"x")
        link = zipfile.ZipInfo("wikiart/Baroque/link.jpg")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    root = labels_root(tmp_path / "a" / "root")
    proc = cli("--root", str(root), "--from", str(archive))
    assert "refused member 'wikiart/../../escaped.jpg': climbs out" in proc.stdout
    assert "refused member 'wikiart/Baroque/link.jpg': a link" in proc.stdout
    assert not (tmp_path / "escaped.jpg").exists() and not (root / "images" / "Baroque" / "link.jpg").exists()


def test_kill_9_mid_extraction_leaves_nothing_half_written_and_a_rerun_finishes(tmp_path):
    root = labels_root(tmp_path / "root")
    archive = make_zip(tmp_path / "wikiart.zip", bad_crc=BAD_CRC)
    killed = cli("--root", str(root), "--from", str(archive), kill_at="extract:6")  # SIGKILL, 6th member
    assert killed.returncode == -9
    images = root / "images"
    partial = on_disk(images)
    assert len(partial) == 5 and all((images / n).read_bytes() == jpeg(NAMES.index(n)) for n in partial)
    with pytest.raises(Exception, match="was interrupted: run .* again to finish it"):
        load_wikiart(root)
    again = cli("--root", str(root), "--from", str(archive))
    assert again.returncode == 0, again.stderr
    assert "extracted 21 of 22 files (5 already in place from an earlier run); 1 damaged" in again.stdout
    assert on_disk(images) == set(NAMES) - {BAD_CRC}
    assert not (root / ".images.partial").exists()
    load_wikiart(root)


def test_unreadable_archive_directory_advice(tmp_path):
    data = bytearray(make_zip(tmp_path / "w.zip").read_bytes())
    at = data.rindex(b"PK\x01\x02")
    data[at:at + 4] = b"XXXX"  # the end record is there, a central directory entry is not readable
    (tmp_path / "damaged.zip").write_bytes(bytes(data))
    proc = cli("--root", str(labels_root(tmp_path / "root")), "--from", str(tmp_path / "damaged.zip"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "complete but its directory is damaged" in proc.stderr and "--from <file or folder>" in proc.stderr
    assert "data=hf_wikiart" in proc.stderr and not (tmp_path / "root" / "images").exists()


def test_train_and_prepare_on_a_damaged_archive_without_missing_images_skip(tmp_path):
    from tests.conftest import TINY, TINY_SEQUENCER

    root = labels_root(tmp_path / "wikiart")
    assert cli("--root", str(root), "--from", str(make_zip(tmp_path / "w.zip", bad_crc=BAD_CRC, cut_short=CUT))
               ).returncode == 0
    data = ["data=wikiart", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}"]
    note = (f"damaged in the archive (listed in {root / 'damaged_images.csv'}), left out: "
            f"style 2 train / 0 val; genre 1 train / 0 val; artist 2 train / 0 val")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    prep = subprocess.run([sys.executable, "-m", "deepart.data.prepare", *data, "--workers", "1", "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert note in prep.stderr + prep.stdout and "cached 20 images" in prep.stdout
    run = subprocess.run([sys.executable, "train.py", *data, *TINY, *TINY_SEQUENCER, "data.cache=off",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert note in out and "unreadable images were skipped" not in out  # left out, not met as missing files
    assert "data: 5 train / 15 val images" in out


def test_ctrl_c_mid_extraction_keeps_complete_files_only(tmp_path):
    import signal
    import zipfile

    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(6000):
            zf.writestr(f"wikiart/Style{i % 3}/p{i}.jpg", bytes([i % 251]) * 2000)
    root = labels_root(tmp_path / "root")
    hold_file = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-m", "deepart.data.download", "wikiart", "--root", str(root),
                             "--from", str(archive), "--no-progress"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **hold_env("extract:100", hold_file)},  # 99 files in place
                            # Python turns SIGINT into KeyboardInterrupt unless it starts with SIGINT ignored
                            # (as under a background shell job)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_until_held(proc, hold_file)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to finish" in err and "Traceback" not in err
    done = list((root / "images").rglob("*"))
    files = [p for p in done if p.is_file()]
    assert 0 < len(files) < 6000 and not (root / ".images.partial").exists()
    assert all(p.read_bytes() == bytes([int(p.stem[1:]) % 251]) * 2000 for p in files)
    again = cli("--root", str(root), "--from", str(archive))
    assert f"extracted 6,000 of 6,000 files ({len(files):,} already in place" in again.stdout
