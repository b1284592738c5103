"""Get WikiArt (ArtGAN splits): the label files and the images, downloaded or from a copy you have.

    python -m deepart download wikiart [--root data/wikiart] [--images] [--keep-archive]
    python -m deepart download wikiart --from <wikiart.zip | wikiart.tar.gz | folder>
    python -m deepart download wikiart --check [--max-absent 0.01]

Label files come from the cs-chan/ArtGAN repository and are saved flat under `root` with the names
`deepart.data.wikiart` reads; each one is parsed and its row / class count checked after download.
The image archive is downloaded into `root/wikiart.zip.part` with HTTP Range requests, so an interrupted
download continues where it stopped (run the command again); the finished file must have the size the
server announced. Extraction (deepart.data.archive) keeps every member that reads back with a good CRC-32,
lists the damaged ones in `root/damaged_images.csv`, refuses unsafe members by name and can be interrupted
and finished later. `--from` takes a zip, a tar (.gz/.bz2/.xz) or an extracted folder (linked, not copied);
`--check` prints the coverage of every split file (deepart.data.coverage). No checksum of the whole archive
is published upstream; pass `--sha256` to compare yours. Base URLs can be overridden with `--labels-url` /
`--images-url` or the environment variables DEEPART_WIKIART_LABELS_URL / DEEPART_WIKIART_IMAGES_URL.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from deepart.core.errors import DataError, report_errors
from deepart.data.archive import (
    DAMAGED_FILE,
    STATE_FILE,
    Extraction,
    extract_archive,
    is_finished,
    member_name,  # noqa: F401  (the archive's name decoding, used by the tests)
    read_state,
    write_damaged,
)
from deepart.data.coverage import MAX_ABSENT, check
from deepart.data.wikiart import read_split

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
                  f"then run `python -m deepart download wikiart --root {root} --images` again: it uses "
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
                if _complete_part(exc, part, dest, offset):
                    return dest
                if attempt < retries:
                    continue
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            manual = manual_instructions(dest.parent, dest.suffix == ".zip")
            raise DataError(f"cannot reach {url} ({reason}).\n{manual}") from None
        with response:
            if offset and response.status != 206:  # the server ignores Range: start again
                offset = 0
            total = _total_size(response, offset)
            try:
                _append(response, part, offset, total, dest.name, progress)
            except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError) as exc:
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


def _complete_part(exc: urllib.error.HTTPError, part: Path, dest: Path, offset: int) -> bool:
    """After HTTP 416 on a resumed download: rename `part` to `dest` when it already holds every byte the server
    announces (True); otherwise delete it, to start again (False)."""
    announced = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
    if announced.isdigit() and int(announced) == offset:
        part.rename(dest)
        return True
    part.unlink()
    return False


def _append(response, part: Path, offset: int, total: int | None, desc: str, progress: bool) -> None:
    """Write the response's body to `part` (appended after `offset` bytes, else from the start), with a bar."""
    with open(part, "ab" if offset else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=not progress, leave=False) as bar:
        while chunk := response.read(CHUNK):
            out.write(chunk)
            bar.update(len(chunk))


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
def extract_images(archive: Path, root: Path, progress: bool = True, part_file: Path | None = None) -> Extraction:
    """Extract an image archive into `root/images` (deepart.data.archive) and print the one-line summary."""
    result = extract_archive(archive, root, progress=progress, part_file=part_file)
    for name, reason in list(result.refused.items())[:20]:
        print(f"refused member {name!r}: {reason.removeprefix('refused: ')}")
    print(result.line(Path(root) / DAMAGED_FILE))
    return result


def download_images(root: Path, url: str = IMAGES_URL, *, sha256: str | None = None, keep_archive: bool = False,
                    retries: int = 3, progress: bool = True) -> Path:
    """Download (resumably) and extract the image archive to `root/images`; returns that folder. A finished
    extraction is kept; an interrupted one is finished."""
    root = Path(root)
    images_dir = root / "images"
    archive = root / "wikiart.zip"
    state = read_state(root)
    if images_dir.is_dir() and any(images_dir.iterdir()) and (state is None or state.get("complete")):
        print(f"{images_dir} already exists; delete it to download the images again "
              f"(`--check` shows how much of each split it holds)")
        return images_dir
    if state is not None and not state.get("complete") and not archive.is_file():
        source = Path(state.get("archive", ""))
        if source.is_file():  # an interrupted --from <archive>: finish it from there
            extract_images(source, root, progress=progress)
            return images_dir
    if not archive.is_file():
        print(f"downloading {url} ({IMAGES_SIZE_TEXT}) to {archive} (resumable: rerun after an interruption)")
        fetch(url, archive, retries=retries, progress=progress)
    if sha256:
        got = sha256sum(archive)
        if got != sha256.lower():
            print(f"warning: {archive}: SHA-256 {got} differs from the expected {sha256}; extracting what reads "
                  f"back intact (every member's CRC-32 is checked)")
    extract_images(archive, root, progress=progress, part_file=archive.with_name(archive.name + ".part"))
    if not keep_archive:
        archive.unlink()
    return images_dir


def style_folders(root: Path) -> set[str]:
    """The folder names the style split files list (first path component), if they are under `root`."""
    names: set[str] = set()
    for split in ("train", "val"):
        path = Path(root) / f"style_{split}.csv"
        if path.is_file():
            names |= {p.split("/", 1)[0] for p in read_split(path, num_classes=10**6)["path"]}
    return names


def _holds_styles(folder: Path, expected: set[str]) -> bool:
    dirs = {d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")}
    if expected:
        return bool(dirs & expected)
    return any(any(f.suffix.lower() in (".jpg", ".jpeg", ".png") for f in d.iterdir())
               for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def link_folder(folder: Path, root: Path) -> Path:
    """Use an extracted copy in place: `root/images` becomes a link to the folder that holds the style
    folders (`folder` itself or its single top folder). Nothing is copied."""
    folder, root = Path(folder).resolve(), Path(root)
    expected = style_folders(root)
    if not _holds_styles(folder, expected):
        subdirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) == 1 and _holds_styles(subdirs[0], expected):
            folder = subdirs[0]
        else:
            found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
            want = ", ".join(sorted(expected)[:4]) if expected else "Impressionism/, Baroque/, ..."
            raise DataError(f"--from {folder}: this folder does not hold the WikiArt style folders (e.g. {want}), "
                            f"neither does a single top folder in it; found: {', '.join(found[:8]) or 'nothing'}"
                            + (f" (+{len(found) - 8} more)" if len(found) > 8 else ""))
    images_dir = root / "images"
    root.mkdir(parents=True, exist_ok=True)
    if images_dir.is_symlink():
        images_dir.unlink()
    elif images_dir.exists():
        if images_dir.resolve() == folder:
            return images_dir
        raise DataError(f"{images_dir} already holds images; move or delete it to use {folder} instead")
    images_dir.symlink_to(folder, target_is_directory=True)
    write_damaged(root, {})  # a folder copy carries no damage list of an earlier archive
    (root / STATE_FILE).unlink(missing_ok=True)
    print(f"using {folder} in place: {images_dir} -> {folder}")
    return images_dir


def images_from(source: Path, root: Path, progress: bool = True) -> Path:
    """`--from`: a .zip / .tar(.gz) is extracted (resuming an interrupted extraction, the file is kept), a
    folder is linked."""
    source = Path(source)
    if source.is_dir():
        return link_folder(source, root)
    if not source.is_file():
        raise DataError(f"--from {source}: no such file or folder")
    if is_finished(root, source) and (Path(root) / "images").is_dir():
        print(f"{source} was already extracted to {Path(root) / 'images'}; delete that folder to extract it again")
        return Path(root) / "images"
    extract_images(source, root, progress=progress)
    return Path(root) / "images"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepart download",
                                     description="Get WikiArt (ArtGAN splits): the label files and the images, "
                                                 "downloaded or from a copy you have (see docs/data.md).")
    parser.add_argument("dataset", choices=["wikiart"])
    parser.add_argument("--root", default="data/wikiart", help="where to put the files (default data/wikiart)")
    parser.add_argument("--images", action="store_true",
                        help=f"also download and extract the images ({IMAGES_SIZE_TEXT})")
    parser.add_argument("--from", dest="source", metavar="PATH",
                        help="take the images from a copy you have: a .zip, a .tar / .tar.gz, or an extracted "
                             "folder (used in place through a link, not copied)")
    parser.add_argument("--check", action="store_true",
                        help="print listed / present / damaged / missing per task and split; exit 1 when a split "
                             "has more than --max-absent of its images damaged or missing")
    parser.add_argument("--max-absent", type=float, default=MAX_ABSENT,
                        help=f"share of a split that may be damaged or missing for --check (default {MAX_ABSENT})")
    parser.add_argument("--keep-archive", action="store_true", help="keep wikiart.zip after extracting it")
    parser.add_argument("--sha256", help="expected SHA-256 of wikiart.zip, if you have one (a mismatch is reported)")
    parser.add_argument("--labels-url", default=os.environ.get("DEEPART_WIKIART_LABELS_URL", LABELS_URL),
                        help="base URL of the label files")
    parser.add_argument("--images-url", default=os.environ.get("DEEPART_WIKIART_IMAGES_URL", IMAGES_URL),
                        help="URL of wikiart.zip")
    parser.add_argument("--retries", type=int, default=3, help="automatic resumes after a dropped connection")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = Path(args.root)
    progress = not args.no_progress
    complete = True

    def go() -> None:
        nonlocal complete
        if args.check and not (args.images or args.source):
            table, complete = check(root, args.max_absent)
            print(table)
            return
        if args.source and all((root / name).is_file() for name in LABEL_FILES):
            print(f"label files: using the {len(LABEL_FILES)} files in {root}")
        else:
            saved = download_labels(root, args.labels_url, progress=progress)
            print(f"label files ok: {len(saved)} files in {root}")
        if args.source:
            images_from(Path(args.source), root, progress=progress)
        elif args.images:
            download_images(root, args.images_url, sha256=args.sha256, keep_archive=args.keep_archive,
                            retries=args.retries, progress=progress)
        if args.check:
            table, complete = check(root, args.max_absent)
            print(table)

    try:
        report_errors(go)
    except KeyboardInterrupt:
        print("\ninterrupted: the files already extracted or downloaded are kept (nothing half-written is left in "
              "the images folder); run the same command again to finish", file=sys.stderr)
        return 130
    if not complete:
        print(f"a split has more than {args.max_absent:.0%} of its images damaged or missing (see above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
