"""Extracting an image archive (zip, tar, tar.gz/bz2/xz) into `<root>/images/`, damaged members and all.

- Every member that reads back intact is extracted; one that does not (bad CRC-32, invalid compressed data,
  cut short) is listed with its reason in `<root>/damaged_images.csv` and leaves no file behind. Only an
  archive whose directory cannot be read at all is refused (`ArchiveUnreadable`, with advice that fits).
- Safe: a member whose name is absolute or climbs out with `..`, a link (symbolic or hard) or a special
  file is refused by name and never written.
- Interruptible: each member is written to a temporary file in `<root>/.images.partial/` and renamed into
  `images/` only once complete, so the images folder never holds a half-written file (Ctrl-C or kill -9);
  `<root>/.extraction.json` records whether the extraction finished. Running it again skips the members
  already in place (same size) and finishes the job.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from deepart.core import faults
from deepart.core.errors import DataError
from deepart.core.files import atomic_write_text

DAMAGED_FILE = "damaged_images.csv"  # in the data root: path (relative to images/), reason
STATE_FILE = ".extraction.json"      # in the data root: which archive, finished or not
STAGING = ".images.partial"          # in the data root: members being written
CHUNK = 1 << 20
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
#: what to do when the images cannot be had from this archive at all
ELSEWHERE = ("other copies of the same images work too: the archive.org copy (.tar.gz) or the Kaggle copy "
             "(a folder): `python -m deepart download wikiart --from <file or folder>`; or train on the "
             "Hugging Face parquet with data=hf_wikiart (a different label set; see docs/data.md)")


class ArchiveUnreadable(DataError):
    """The archive's directory cannot be read: no member can be located."""


@dataclass
class Extraction:
    """What an extraction did. `total` counts the file members found (tar: up to where it broke off)."""

    archive: Path
    images_dir: Path
    total: int = 0
    extracted: int = 0
    kept: int = 0  # already in place from an earlier, interrupted run
    damaged: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    broken_off: str | None = None  # tar: the reason the rest of the stream could not be read

    def line(self, damaged_file: Path) -> str:
        bad = len(self.damaged) + len(self.refused)
        text = f"extracted {self.extracted + self.kept:,} of {self.total:,} files"
        if self.kept:
            text += f" ({self.kept:,} already in place from an earlier run)"
        if bad:
            text += f"; {bad:,} damaged (listed in {damaged_file})"
        if self.broken_off:
            text += f"; the archive breaks off after that ({self.broken_off}): members after it cannot be read"
        return text


# ---------------------------------------------------------------------------------------- names
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


def common_top(names: list[str]) -> str | None:
    """The single top folder every member lives in (the ArtGAN archive has `wikiart/<Style>/...`)."""
    tops = {PurePosixPath(n).parts[0] for n in names if len(PurePosixPath(n).parts) > 1}
    flat = any(len(PurePosixPath(n).parts) == 1 for n in names)
    return tops.pop() if len(tops) == 1 and not flat else None


def unsafe_reason(name: str) -> str | None:
    """Why a member name may not be written under the target, or None if it may."""
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if any(p == ".." for p in name.replace("\\", "/").split("/")):
        return "climbs out of the target with '..'"
    return None


def relative_parts(name: str, top: str | None) -> tuple[str, ...]:
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    return parts[1:] if top and parts[:1] == (top,) else parts


# ---------------------------------------------------------------------------------------- state
def read_state(root: Path) -> dict | None:
    try:
        return json.loads((Path(root) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _identity(archive: Path) -> dict:
    st = archive.stat()
    return {"archive": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def read_damaged(root: Path) -> dict[str, str]:
    """`<root>/damaged_images.csv` as {path relative to images/: reason}; {} when there is none."""
    path = Path(root) / DAMAGED_FILE
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["path"]: row["reason"] for row in csv.DictReader(f)}


def write_damaged(root: Path, damaged: dict[str, str]) -> Path:
    path = Path(root) / DAMAGED_FILE
    if not damaged:
        path.unlink(missing_ok=True)
        return path
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "reason"])
    writer.writerows(sorted(damaged.items()))
    atomic_write_text(path, text.getvalue())
    return path


# ---------------------------------------------------------------------------------------- reasons
def damage_reason(exc: BaseException) -> str:
    """A short, user-facing reason for a member that failed to read back."""
    text = str(exc)
    if "CRC" in text:
        return "bad CRC-32 (the bytes read back differ from the checksum stored in the archive)"
    if isinstance(exc, zlib.error):
        return f"invalid compressed data ({text})"
    if isinstance(exc, EOFError) or "end of" in text.lower() or "truncated" in text.lower():
        return f"cut short ({text or type(exc).__name__})"
    return f"{type(exc).__name__}: {text}"


def _has_end_record(archive: Path) -> bool:
    """Whether the zip's end-of-central-directory record is there (it is the last thing written: a file
    without it was cut short)."""
    size = archive.stat().st_size
    with open(archive, "rb") as f:
        f.seek(max(0, size - (1 << 16) - 22))
        return b"PK\x05\x06" in f.read()


def unreadable(archive: Path, exc: BaseException, part_file: Path | None = None) -> ArchiveUnreadable:
    """The refusal, with the advice that fits the cause."""
    if part_file is not None and part_file.exists():
        advice = (f"an unfinished download ({part_file} is still there): run "
                  f"`python -m deepart download wikiart --images` again to resume it")
    elif archive.suffix.lower() == ".zip" and not _has_end_record(archive):
        advice = ("the file ends before the zip directory: the download or copy did not finish. If it came from "
                  "`python -m deepart download wikiart --images`, run it again to resume; if you copied "
                  "it, copy it again")
    else:
        advice = (f"the file is complete but its directory is damaged, so downloading it again will not help; "
                  f"{ELSEWHERE}")
    return ArchiveUnreadable(f"{archive}: cannot read the archive's directory ({exc}); nothing was extracted. "
                             f"Looks like {advice}")


# ---------------------------------------------------------------------------------------- extraction
class _Target:
    """Writes members under `images_dir` through temporary files in a staging folder."""

    def __init__(self, root: Path, images_dir: Path):
        self.images_dir = images_dir
        self.staging = root / STAGING
        shutil.rmtree(self.staging, ignore_errors=True)  # what an interrupted run was writing
        self.staging.mkdir(parents=True)
        images_dir.mkdir(parents=True, exist_ok=True)
        self.serial = 0

    def done(self, parts: tuple[str, ...], size: int) -> bool:
        target = self.images_dir.joinpath(*parts)
        return target.is_file() and target.stat().st_size == size

    def write(self, parts: tuple[str, ...], src, bar) -> None:
        """Copy `src` to a temporary file, then rename it into place (a read error leaves nothing)."""
        self.serial += 1
        tmp = self.staging / f"{self.serial}.part"
        try:
            with open(tmp, "wb") as out:
                while block := src.read(CHUNK):
                    out.write(block)
                    bar.update(len(block))
            faults.point("extract")
            target = self.images_dir.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _zip_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _deflate_cut_short(archive: Path, info: zipfile.ZipInfo) -> bool:
    """Whether a deflated member's compressed bytes stop before the end of the deflate stream."""
    if info.compress_type != zipfile.ZIP_DEFLATED:
        return False
    try:
        with open(archive, "rb") as f:
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            f.seek(name_len + extra_len, os.SEEK_CUR)
            inflate, left = zlib.decompressobj(-15), info.compress_size
            while left > 0 and not inflate.eof:
                block = f.read(min(CHUNK, left))
                if not block:
                    break
                left -= len(block)
                inflate.decompress(block, 1 << 16)
                while inflate.unconsumed_tail and not inflate.eof:
                    inflate.decompress(inflate.unconsumed_tail, 1 << 16)
            return not inflate.eof
    except (OSError, zlib.error, struct.error):
        return False


def _extract_zip(archive: Path, target: _Target, result: Extraction, progress: bool, part_file: Path | None) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise unreadable(archive, exc, part_file) from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        names = [member_name(m) for m in members]
        top = common_top(names)
        result.total = len(members)
        with tqdm(total=sum(m.file_size for m in members), unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"extracting {archive.name}", disable=not progress, leave=False) as bar:
            for info, name in zip(members, names):
                reason = unsafe_reason(name) or ("a link" if _zip_link(info) else None)
                if reason:
                    result.refused[name] = f"refused: {reason}"
                    continue
                parts = relative_parts(name, top)
                if target.done(parts, info.file_size):
                    result.kept += 1
                    bar.update(info.file_size)
                    continue
                try:
                    with zf.open(info) as src:  # zipfile checks the CRC-32 at the end of the member
                        target.write(parts, src, bar)
                    result.extracted += 1
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
                    reason = damage_reason(exc)
                    if "CRC" in str(exc) and _deflate_cut_short(archive, info):
                        reason = "cut short (its compressed data ends before the end of the stream)"
                    result.damaged["/".join(parts)] = reason


def _tar_refusal(member: tarfile.TarInfo) -> str | None:
    reason = unsafe_reason(member.name)
    if reason:
        return reason
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return "not a regular file"
    return None


def _extract_tar(archive: Path, target: _Target, result: Extraction, progress: bool) -> None:
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise unreadable(archive, exc) from None
    top: str | None = None
    decided = False
    current: str | None = None
    with tf, tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=f"extracting {archive.name}",
                  disable=not progress, leave=False) as bar:
        try:
            for member in tf:
                current = member.name
                if member.isdir():
                    continue
                result.total += 1
                reason = _tar_refusal(member)
                if reason:
                    result.refused[member.name] = f"refused: {reason}"
                    continue
                if not decided:  # the first file decides whether there is one top folder to drop
                    parts = PurePosixPath(member.name).parts
                    top, decided = (parts[0] if len(parts) > 2 else None), True
                parts = relative_parts(member.name, top)
                if target.done(parts, member.size):
                    result.kept += 1
                    continue
                try:
                    src = tf.extractfile(member)
                    target.write(parts, src, bar)
                    result.extracted += 1
                except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
                    result.damaged["/".join(parts)] = damage_reason(exc)
                    result.broken_off = damage_reason(exc)
                    return  # a compressed stream cannot be resynchronised after a break
                current = None
        except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
            if result.total == 0 and not result.refused:
                raise unreadable(archive, exc) from None
            result.broken_off = damage_reason(exc) + (f" at {current}" if current else "")


def archive_kind(path: Path) -> str | None:
    """'zip', 'tar' or None (by name, then by content)."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except OSError:
        return None


def extract_archive(archive: Path, root: Path, progress: bool = True, part_file: Path | None = None) -> Extraction:
    """Extract `archive` into `<root>/images/` (its single top folder, if any, is dropped); see the module doc.
    Writes `<root>/damaged_images.csv` (or removes a stale one) and marks the extraction finished."""
    archive, root = Path(archive), Path(root)
    images_dir = root / "images"
    kind = archive_kind(archive)
    if kind is None:
        raise DataError(f"{archive}: not a zip or tar archive; pass a .zip, .tar, .tar.gz or a folder")
    if images_dir.is_symlink():
        raise DataError(f"{images_dir} is a link to {os.readlink(images_dir)} (from an earlier --from <folder>); "
                        f"remove the link to extract {archive.name} there instead")
    state = {**_identity(archive), "complete": False}
    fresh = not images_dir.exists()
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / STATE_FILE, state)
    result = Extraction(archive, images_dir)
    target = _Target(root, images_dir)
    try:
        if kind == "zip":
            _extract_zip(archive, target, result, progress, part_file)
        else:
            _extract_tar(archive, target, result, progress)
    except ArchiveUnreadable:
        (root / STATE_FILE).unlink(missing_ok=True)
        if fresh:
            shutil.rmtree(images_dir, ignore_errors=True)
        raise
    finally:
        target.close()
    damaged = {**result.damaged, **result.refused}
    write_damaged(root, damaged)
    _write_json(root / STATE_FILE, {**state, "complete": True, "files": result.total,
                                    "extracted": result.extracted + result.kept, "damaged": len(damaged),
                                    "broken_off": result.broken_off})
    return result


def is_finished(root: Path, archive: Path | None = None) -> bool:
    """Whether `<root>/images` holds a finished extraction (of `archive`, if given)."""
    state = read_state(root)
    if not state or not state.get("complete"):
        return False
    return archive is None or state.get("archive") == str(Path(archive).resolve())
