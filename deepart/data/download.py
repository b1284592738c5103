"""Fetch WikiArt (ArtGAN splits): the label files and, with `--images`, the 25.4 GB image archive.

    python -m deepart.data.download wikiart [--root data/wikiart] [--images] [--keep-archive]

Label files come from the cs-chan/ArtGAN repository and are saved flat under `root` with the names
`deepart.data.wikiart` reads; each one is parsed and its row / class count checked after download.
The image archive is downloaded into `root/wikiart.zip.part` with HTTP Range requests, so an interrupted
download continues where it stopped (run the command again); the finished file must have the size the
server announced, then every member's CRC-32 is verified while it is extracted into a temporary folder,
which is renamed to `root/images/` only when everything succeeded. No checksum of the whole archive is
published upstream; pass `--sha256` if you have one. Base URLs can be overridden with `--labels-url` /
`--images-url` or the environment variables DEEPART_WIKIART_LABELS_URL / DEEPART_WIKIART_IMAGES_URL.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from deepart.core.errors import DataError, report_errors

LABELS_URL = "https://raw.githubusercontent.com/cs-chan/ArtGAN/master/WikiArt%20Dataset"
IMAGES_URL = "http://web.fsktm.um.edu.my/~cschan/source/ICIP2017/wikiart.zip"
IMAGES_SIZE_TEXT = "25.4 GB"

#: saved name -> upstream names under LABELS_URL, tried in order
LABEL_FILES = {
    "style_train.csv": ["Style/style_train.csv"],
    "style_val.csv": ["Style/style_val.csv"],
    "style_class.txt": ["Style/style_class.txt"],
    "genre_train.csv": ["Genre/genre_train.csv"],
    "genre_val.csv": ["Genre/genre_val.csv"],
    "genre_class.txt": ["Genre/genre_class.txt", "Genre/genre_class"],
    "artist_train.csv": ["Artist/artist_train", "Artist/artist_train.csv"],
    "artist_val.csv": ["Artist/artist_val", "Artist/artist_val.csv"],
    "artist_class.txt": ["Artist/artist_class", "Artist/artist_class.txt"],
}
#: published row counts (split files) and class counts (class lists): the check after download
EXPECTED_COUNTS = {"style_train.csv": 57025, "style_val.csv": 24421, "genre_train.csv": 45503,
                   "genre_val.csv": 19492, "artist_train.csv": 13346, "artist_val.csv": 5706,
                   "style_class.txt": 27, "genre_class.txt": 10, "artist_class.txt": 23}

CHUNK = 1 << 20
TIMEOUT_S = 60


def manual_instructions(root: Path, images: bool) -> str:
    lines = [f"Manual download: fetch these files into {root}/ (saved under the name on the left):"]
    lines += [f"  {name:<18} <- {LABELS_URL}/{ups[0].replace(' ', '%20')}" for name, ups in LABEL_FILES.items()]
    if images:
        lines += [f"  wikiart.zip ({IMAGES_SIZE_TEXT}) <- {IMAGES_URL}",
                  "  (mirror: the Google Drive link in the upstream README, "
                  "https://github.com/cs-chan/ArtGAN/tree/master/WikiArt%20Dataset)",
                  f"then run `python -m deepart.data.download wikiart --root {root} --images` again: it uses "
                  f"{root}/wikiart.zip when present, checks it and extracts it to {root}/images/."]
    return "\n".join(lines)


class DownloadInterrupted(DataError):
    """The connection dropped; the bytes received so far are kept in the `.part` file."""


def _open(url: str, offset: int):
    request = urllib.request.Request(url, headers={"User-Agent": "deepart"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def _total_size(response, offset: int) -> int | None:
    """Full size of the resource from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) + offset if length is not None else None


def fetch(url: str, dest: Path, *, retries: int = 3, progress: bool = True) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming a previous partial download.

    The connection may drop up to `retries` times (each retry resumes). On success the size is checked
    against what the server announced and `.part` is renamed to `dest`; on failure the partial file stays
    for the next attempt and DownloadInterrupted / DataError is raised.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        try:
            response = _open(url, offset)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing left to send: complete if the sizes agree
                announced = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
                if announced.isdigit() and int(announced) == offset:
                    part.rename(dest)
                    return dest
                part.unlink()
                if attempt < retries:
                    continue
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(f"cannot reach {url} ({reason}).\n{manual_instructions(dest.parent, dest.suffix == '.zip')}") from None
        with response:
            if offset and response.status != 206:  # the server ignores Range: start again
                offset = 0
            total = _total_size(response, offset)
            try:
                with open(part, "ab" if offset else "wb") as out, tqdm(
                        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, disable=not progress, leave=False) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, OSError) as exc:
                if attempt < retries:
                    continue
                have = part.stat().st_size
                raise DownloadInterrupted(
                    f"download of {url} interrupted after {have} of {total or '?'} bytes ({exc}); the "
                    f"partial file {part} is kept: run the same command again to resume") from None
        have = part.stat().st_size
        if total is not None and have != total:
            if have < total and attempt < retries:
                continue
            if have > total:
                part.unlink()
            raise DownloadInterrupted(f"{url}: received {have} bytes, the server announced {total}; "
                                      f"run the same command again to resume")
        part.rename(dest)
        return dest
    raise AssertionError("unreachable")


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- label files
def _count(path: Path) -> int | str:
    """Rows of a split file / classes of a class list, or the parse error."""
    from deepart.data.wikiart import read_class_list, read_split

    try:
        if path.suffix == ".txt":
            return len(read_class_list(path))
        return len(read_split(path, num_classes=10**6))
    except DataError as exc:
        return str(exc)


def download_labels(root: Path, base_url: str = LABELS_URL, progress: bool = True) -> list[Path]:
    """The six ArtGAN split files and three class lists, saved flat under `root` and count-checked
    (files already there with the published counts are kept)."""
    root = Path(root)
    for name, upstream in LABEL_FILES.items():
        dest = root / name
        if dest.is_file() and _count(dest) == EXPECTED_COUNTS[name]:
            continue
        for i, remote in enumerate(upstream):
            try:
                fetch(f"{base_url.rstrip('/')}/{remote.replace(' ', '%20')}", dest, progress=progress)
                break
            except DataError as exc:
                if "HTTP 404" not in str(exc) or i == len(upstream) - 1:
                    raise
        got = _count(dest)
        if got != EXPECTED_COUNTS[name]:
            bad = dest.with_name(dest.name + ".bad")
            dest.replace(bad)
            raise DataError(f"{bad}: expected {EXPECTED_COUNTS[name]} rows/classes as published, got {got}; "
                            f"this is not the ArtGAN file (check --labels-url)")
    return [root / name for name in LABEL_FILES]


# ---------------------------------------------------------------------------------------- images
def member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as its bytes were meant: archives written without the UTF-8 flag are decoded
    by zipfile as cp437; if those bytes are valid UTF-8 they are read as UTF-8 instead."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name


def _common_top(names: list[str]) -> str | None:
    """The single top folder every member lives in (the ArtGAN archive has `wikiart/<Style>/...`)."""
    tops = {PurePosixPath(n).parts[0] for n in names if len(PurePosixPath(n).parts) > 1}
    flat = any(len(PurePosixPath(n).parts) == 1 for n in names)
    return tops.pop() if len(tops) == 1 and not flat else None


def extract_images(archive: Path, images_dir: Path, progress: bool = True) -> int:
    """Extract the image archive to `images_dir` (its single top folder, if any, is dropped), checking
    every member's CRC. Works in a temporary sibling folder renamed into place at the end, so a failure
    leaves nothing at `images_dir`. Returns the number of files extracted."""
    archive, images_dir = Path(archive), Path(images_dir)
    tmp = images_dir.with_name(f".{images_dir.name}.extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            names = [member_name(m) for m in members]
            top = _common_top(names)
            count = 0
            with tqdm(total=sum(m.file_size for m in members), unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"extracting {archive.name}", disable=not progress) as bar:
                for info, name in zip(members, names):
                    parts = PurePosixPath(name).parts[1 if top else 0:]
                    if not parts or any(p in ("..", "") for p in parts) or PurePosixPath(name).is_absolute():
                        raise DataError(f"{archive}: unsafe member name {name!r}")
                    target = tmp.joinpath(*parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as out:  # zipfile checks the CRC at EOF
                        while block := src.read(CHUNK):
                            out.write(block)
                            bar.update(len(block))
                    count += 1
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive} is corrupt or incomplete ({exc}); nothing was extracted. Delete it and run "
                        f"`python -m deepart.data.download wikiart --images` again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if images_dir.exists():
        shutil.rmtree(images_dir)
    tmp.rename(images_dir)
    return count


def download_images(root: Path, url: str = IMAGES_URL, *, sha256: str | None = None, keep_archive: bool = False,
                    retries: int = 3, progress: bool = True) -> Path:
    """Download (resumably) and extract the image archive to `root/images`; returns that folder."""
    root = Path(root)
    images_dir = root / "images"
    if images_dir.is_dir() and any(images_dir.iterdir()):
        print(f"{images_dir} already exists; delete it to download the images again")
        return images_dir
    archive = root / "wikiart.zip"
    if not archive.is_file():
        print(f"downloading {url} ({IMAGES_SIZE_TEXT}) to {archive} (resumable: rerun after an interruption)")
        fetch(url, archive, retries=retries, progress=progress)
    if sha256:
        got = sha256sum(archive)
        if got != sha256.lower():
            raise DataError(f"{archive}: SHA-256 {got} differs from the expected {sha256}; the archive is "
                            f"corrupt: delete it and run the command again")
    n = extract_images(archive, images_dir, progress=progress)
    print(f"extracted {n} files to {images_dir}")
    if not keep_archive:
        archive.unlink()
    return images_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepart.data.download",
                                     description="Download a dataset: the WikiArt ArtGAN label files and images.")
    parser.add_argument("dataset", choices=["wikiart"])
    parser.add_argument("--root", default="data/wikiart", help="where to put the files (default data/wikiart)")
    parser.add_argument("--images", action="store_true", help=f"also download and extract the images ({IMAGES_SIZE_TEXT})")
    parser.add_argument("--keep-archive", action="store_true", help="keep wikiart.zip after extracting it")
    parser.add_argument("--sha256", help="expected SHA-256 of wikiart.zip, if you have one")
    parser.add_argument("--labels-url", default=os.environ.get("DEEPART_WIKIART_LABELS_URL", LABELS_URL),
                        help="base URL of the label files")
    parser.add_argument("--images-url", default=os.environ.get("DEEPART_WIKIART_IMAGES_URL", IMAGES_URL),
                        help="URL of wikiart.zip")
    parser.add_argument("--retries", type=int, default=3, help="automatic resumes after a dropped connection")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.root)

    def go() -> None:
        saved = download_labels(root, args.labels_url, progress=not args.no_progress)
        print(f"label files ok: {len(saved)} files in {root}")
        if args.images:
            download_images(root, args.images_url, sha256=args.sha256, keep_archive=args.keep_archive,
                            retries=args.retries, progress=not args.no_progress)

    report_errors(go)
    return 0


if __name__ == "__main__":
    sys.exit(main())
