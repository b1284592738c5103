"""The CPU-scale painting set of `experiment=paintings`, built from a WikiArt copy you have.

    python -m deepart paintings --from <WikiArt copy> [--out data/paintings-dev] [--seed 0]

The copy is any of: the ArtGAN images as a folder (`data/wikiart` after `python -m deepart download wikiart`,
its `images/` folder, or the Kaggle / archive.org copy extracted), as an archive (.zip, .tar, .tar.gz; read in
place, nothing extracted), or the Hugging Face parquet shards of `huggan/wikiart` (a folder, one shard or a
glob; needs pyarrow). The set it writes has the shape of the one RESULTS.md was measured on:

    <out>/train/<Style>/<n>.jpg     150 per style          <out>/labels.csv      path, style, split
    <out>/val/<Style>/<n>.jpg       50 per style           <out>/manifest.json   source, seed, files, checksum
7 styles (STYLES, named by the ArtGAN style folders), each painting scaled so its longer side is 224 px and
padded with black to 224 x 224. The selection is seeded and depends on the images' names only: every image of a
style gets the key sha256("<seed>/<name>") (name: `<StyleFolder>/<file>` for the ArtGAN images, whatever copy
they come from; `<shard file>/<row>` for a parquet row), the readable images with the smallest keys are taken
(the first `train` of them for train, the next `val` for val) and an unreadable one is passed over (listed in the
manifest with its reason). So the same copy and seed give the same set, and the folder, zip and tar.gz of one
copy give the same set too; `selection_sha256` in the manifest, over each file's split, style and source name,
says whether two sets are the same selection.

The set is written into `<out>.partial/` and renamed to `<out>` when complete; an existing `<out>` is never
overwritten (delete it, or pick another --out).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import heapq
import io
import json
import os
import re
import shutil
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image
from tqdm.auto import tqdm

from deepart.core.errors import DataError, report_errors
from deepart.core.files import atomic_write_text
from deepart.data.archive import archive_kind, common_top, damage_reason, member_name, relative_parts
from deepart.data.folder import IMAGE_EXTENSIONS
from deepart.data.hf_wikiart import class_names, find_shards
from deepart.data.images import ImageLoadError, load_rgb
from deepart.data.rowstore import import_pyarrow
from deepart.data.wikiart import STYLE_FOLDERS

#: the styles of the set RESULTS.md was measured on, as ArtGAN style folder names
STYLES = ("Art_Nouveau_Modern", "Baroque", "Expressionism", "Impressionism", "Post_Impressionism", "Romanticism",
          "Symbolism")
TRAIN, VAL, SIZE = 150, 50, 224
JPEG_QUALITY = 75          # Pillow's default, as in the measured set
DEFAULT_OUT = "data/paintings-dev"
MANIFEST = "manifest.json"
LABELS = "labels.csv"
FORMAT = 1


def folder_of(style: str) -> str:
    """A style's folder name: the ArtGAN folder where it differs from the class name (Art_Nouveau)."""
    return STYLE_FOLDERS.get(style, style)


def why(exc: BaseException) -> str:
    """A short reason an image cannot be used, without file names (the manifest keys name the image)."""
    if isinstance(exc, ImageLoadError):
        cause = exc.__cause__ or exc
        return re.sub(r"\s*('[^']*'|<_io\.BytesIO object at 0x[0-9a-fA-F]+>)", "", str(cause)).strip() or \
            type(cause).__name__
    return damage_reason(exc)


def sort_key(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:16], "big")


def render(data: bytes | Path, size: int) -> bytes:
    """The set's JPEG of one image: longer side `size`, padded with black to `size` x `size`, centred.
    Raises ImageLoadError for a file that does not decode."""
    img = load_rgb(io.BytesIO(data) if isinstance(data, bytes) else data, min_side=size)
    w, h = img.size
    scale = size / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------- sources
class Source:
    """A WikiArt copy: its images' names per style, and their bytes."""

    kind = ""

    def __init__(self, path: Path):
        self.path = path

    def names(self) -> dict[str, list[str]]:
        """Style folder -> the names of its images (random-access sources)."""
        raise NotImplementedError

    def fetch(self, names: list[str]) -> Iterator[tuple[str, bytes | Path | Exception]]:
        """(name, the image's bytes or file, or why it cannot be read) for each name, in any order."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def _by_style(names: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in names:
        parts = PurePosixPath(name).parts
        if len(parts) > 1 and _is_image(name) and not any(p.startswith(".") for p in parts):
            out.setdefault(parts[0], []).append(name)
    return out


class FolderSource(Source):
    kind = "folder"

    def names(self):
        return _by_style(sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()))

    def fetch(self, names):
        for name in names:
            yield name, self.path / name


class ZipSource(Source):
    kind = "zip"

    def __init__(self, path: Path):
        super().__init__(path)
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise DataError(f"--from {path}: cannot read it as a zip archive ({exc})") from None
        infos = [i for i in self.zf.infolist() if not i.is_dir()]
        raw = [member_name(i) for i in infos]
        top = common_top(raw)
        self.members = {"/".join(relative_parts(n, top)): i for n, i in zip(raw, infos)}

    def names(self):
        return _by_style(sorted(self.members))

    def fetch(self, names):
        for name in names:
            try:
                with self.zf.open(self.members[name]) as f:  # zipfile checks the CRC-32 at the end
                    yield name, f.read()
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
                yield name, exc

    def close(self):
        self.zf.close()


class TarSource(Source):
    """Read as one stream (a compressed tar has no random access): see `select_stream`."""

    kind = "tar"

    def stream(self, bar: tqdm) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
        try:
            tf = tarfile.open(self.path, "r:*")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"--from {self.path}: cannot read it as a tar archive ({exc})") from None
        top, decided = None, False
        with tf:
            for member in tf:
                bar.update(1)
                if not member.isfile():
                    continue
                if not decided:  # the first file decides whether there is one top folder to drop
                    parts = PurePosixPath(member.name).parts
                    top, decided = (parts[0] if len(parts) > 2 else None), True
                yield "/".join(relative_parts(member.name, top)), tf, member


class ParquetSource(Source):
    """huggan/wikiart's shards: the style column read first, then only the row groups holding chosen rows."""

    kind = "parquet"

    def __init__(self, path: Path, shards: list[Path]):
        super().__init__(path)
        self.pq = import_pyarrow()
        self.shards = {s.name if len({x.name for x in shards}) == len(shards) else s.as_posix(): s for s in shards}
        self.styles: dict[str, list[str]] = {}
        for label, shard in self.shards.items():
            try:
                schema = self.pq.read_schema(shard)
            except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a file that is not parquet
                raise DataError(f"{shard}: cannot read it as parquet ({exc})") from None
            if "image" not in schema.names or "style" not in schema.names:
                raise DataError(f"{shard}: has columns {schema.names}; the paintings set needs 'image' and 'style'")
            names = [folder_of(n) for n in class_names(schema, shard, ["style"])["style"]]
            column = self.pq.read_table(shard, columns=["style"]).column("style").to_pylist()
            for row, value in enumerate(column):
                if value is not None and 0 <= value < len(names):
                    self.styles.setdefault(names[value], []).append(f"{label}/{row}")

    def names(self):
        return self.styles

    def fetch(self, names):
        wanted: dict[tuple[str, int], list[tuple[str, int]]] = {}
        starts_of = {}
        for name in names:
            label, _, row = name.rpartition("/")
            if label not in starts_of:
                meta = self.pq.ParquetFile(self.shards[label]).metadata
                sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                starts_of[label] = [sum(sizes[:g]) for g in range(len(sizes) + 1)]
            starts = starts_of[label]
            group = next(g for g in range(len(starts) - 1) if starts[g] <= int(row) < starts[g + 1])
            wanted.setdefault((label, group), []).append((name, int(row) - starts[group]))
        for (label, group), rows in sorted(wanted.items()):
            table = self.pq.ParquetFile(self.shards[label]).read_row_group(group, columns=["image"])
            column = table.column("image").combine_chunks()
            images = column.field("bytes") if hasattr(column.type, "get_field_index") else column
            for name, index in rows:
                value = images[index].as_py()
                yield name, value if value else DataError("the row has no image bytes")


def _style_root(folder: Path, styles: tuple[str, ...]) -> Path | None:
    """The folder that holds the style folders: `folder/images` (a data/wikiart root), `folder`, or its single
    sub-folder (the Kaggle and archive.org copies extract into wikiart/)."""
    def holds(p: Path) -> bool:
        return p.is_dir() and any((p / s).is_dir() for s in styles)

    if holds(folder / "images"):
        return folder / "images"
    if holds(folder):
        return folder
    subdirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return subdirs[0] if len(subdirs) == 1 and holds(subdirs[0]) else None


def open_source(text: str, styles: tuple[str, ...]) -> Source:
    """The copy named by --from (see the module doc); a one-line DataError when there is none there."""
    path = Path(text).expanduser()
    if any(c in text for c in "*?["):
        return ParquetSource(path, find_shards(text, "huggan/wikiart"))
    if not path.exists():
        raise DataError(f"--from {path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".parquet":
            return ParquetSource(path, [path])
        kind = archive_kind(path)
        if kind == "zip":
            return ZipSource(path)
        if kind == "tar":
            return TarSource(path)
        raise DataError(f"--from {path}: not a zip or tar archive nor a .parquet shard")
    root = _style_root(path, styles)
    if root is not None:
        return FolderSource(root)
    if next(path.rglob("*.parquet"), None) is not None:
        return ParquetSource(path, find_shards(str(path), "huggan/wikiart"))
    raise DataError(f"--from {path}: holds neither WikiArt style folders ({', '.join(s + '/' for s in styles[:3])} "
                    f"...; also looked in images/ and a single sub-folder) nor .parquet shards")


# ---------------------------------------------------------------------------------------------------- selection
@dataclass
class Selection:
    """Per style, the chosen images in key order: (source name, the set's JPEG bytes)."""

    chosen: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    broken_off: str | None = None


def _too_few(style: str, readable: int | None, found: int, need: int, train: int, val: int, source: Source,
             available: list[str]) -> DataError:
    if found == 0:
        some = ", ".join(sorted(available)[:8]) or "none"
        return DataError(f"style {style}: 0 images in {source.path} (its styles: {some}); check --styles")
    count = (f"{found} images in {source.path}" if readable is None else
             f"{readable} readable images in {source.path} ({found} found, {found - readable} unreadable)")
    return DataError(f"style {style}: {count}, {need} needed ({train} train + {val} val); lower --train / --val "
                     f"or choose other --styles")


def select(source: Source, styles: tuple[str, ...], train: int, val: int, seed: int, size: int,
           progress: bool = True) -> Selection:
    """The `train + val` readable images of smallest key of each style, rendered (see the module doc)."""
    need = train + val
    if isinstance(source, TarSource):
        return select_stream(source, styles, train, val, seed, size, progress)
    names = source.names()
    result = Selection(found={s: len(names.get(s, [])) for s in styles})
    for style in styles:  # counts are known before any image is read
        if result.found[style] < need:
            raise _too_few(style, None, result.found[style], need, train, val, source, list(names))
    order = {s: sorted(names[s], key=lambda n: sort_key(seed, n)) for s in styles}
    taken = dict.fromkeys(styles, 0)
    result.chosen = {s: [] for s in styles}
    with tqdm(total=need * len(styles), desc=f"paintings from {source.path.name}", unit="img",
              disable=not progress) as bar:
        while True:
            batch = {}
            for s in styles:
                missing = need - len(result.chosen[s])
                batch[s] = order[s][taken[s]:taken[s] + missing]
                taken[s] += len(batch[s])
            wanted = [n for s in styles for n in batch[s]]
            if not wanted:
                break
            got: dict[str, bytes | Exception] = {}
            for name, data in source.fetch(wanted):
                try:
                    got[name] = data if isinstance(data, Exception) else render(data, size)
                except ImageLoadError as exc:
                    got[name] = exc
            for s in styles:
                for name in batch[s]:  # in key order
                    if isinstance(got[name], Exception):
                        result.skipped[name] = why(got[name])
                    else:
                        result.chosen[s].append((name, got[name]))
                        bar.update(1)
                if len(result.chosen[s]) < need and taken[s] >= len(order[s]):
                    raise _too_few(s, len(result.chosen[s]), result.found[s], need, train, val, source, list(names))
    return result


def select_stream(source: TarSource, styles: tuple[str, ...], train: int, val: int, seed: int, size: int,
                  progress: bool) -> Selection:
    """`select` in one pass over a tar: per style, a heap of the smallest-key readable images seen so far (an
    image is decoded only when its key would enter the heap), which at the end is the same choice."""
    need = train + val
    result = Selection(found=dict.fromkeys(styles, 0))
    heaps: dict[str, list[tuple[int, str, bytes]]] = {s: [] for s in styles}  # (-key, name, jpeg)
    seen_styles: set[str] = set()
    with tqdm(desc=f"reading {source.path.name}", unit=" files", disable=not progress) as bar:
        current = None
        try:
            for name, tf, member in source.stream(bar):
                current = name
                style = PurePosixPath(name).parts[0]
                if len(PurePosixPath(name).parts) < 2 or not _is_image(name):
                    continue
                seen_styles.add(style)
                if style not in heaps:
                    continue
                result.found[style] += 1
                key, heap = sort_key(seed, name), heaps[style]
                if len(heap) >= need and key > -heap[0][0]:
                    continue
                try:
                    data = tf.extractfile(member).read()
                except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
                    result.skipped[name] = damage_reason(exc)
                    result.broken_off = f"{damage_reason(exc)} at {name}"
                    break  # a compressed stream cannot be resynchronised after a break
                try:
                    item = (-key, name, render(data, size))
                except ImageLoadError as exc:
                    result.skipped[name] = why(exc)
                    continue
                if len(heap) < need:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)
                current = None
        except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
            result.broken_off = damage_reason(exc) + (f" at {current}" if current else "")
    for s in styles:
        chosen = sorted(heaps[s], key=lambda item: -item[0])
        if len(chosen) < need:
            error = _too_few(s, len(chosen), result.found[s], need, train, val, source, sorted(seen_styles))
            if result.broken_off:
                raise DataError(f"{error} (the archive breaks off: {result.broken_off})")
            raise error
        result.chosen[s] = [(name, data) for _, name, data in chosen]
    return result


# ---------------------------------------------------------------------------------------------------- writing
def selection_sha256(files: list[dict]) -> str:
    """Over each file's split, style and source name, in the order of the files (sorted by path)."""
    text = "".join(f"{f['split']}\t{f['style']}\t{f['source']}\n" for f in files)
    return hashlib.sha256(text.encode()).hexdigest()


def build(source_text: str, out: str | Path = DEFAULT_OUT, styles: tuple[str, ...] = STYLES, train: int = TRAIN,
          val: int = VAL, seed: int = 0, size: int = SIZE, progress: bool = True) -> dict:
    """Write the paintings set into `out` (see the module doc); returns its manifest."""
    out = Path(out)
    styles = tuple(dict.fromkeys(folder_of(s) for s in styles))
    if train < 1 or val < 1:
        raise DataError(f"--train {train} --val {val}: each split needs at least one image per style")
    source = open_source(source_text, styles)  # the input first: a wrong --from is named whatever --out holds
    try:
        if out.exists() and any(out.iterdir()):
            raise DataError(f"--out {out}: the folder exists and is not empty; delete it or pass another --out")
        chosen = select(source, styles, train, val, seed, size, progress)
    finally:
        source.close()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    files = []
    width = len(str(len(styles) * (train + val) - 1))
    n = 0
    for style in sorted(styles):
        for rank, (name, data) in enumerate(chosen.chosen[style]):
            split = "train" if rank < train else "val"
            path = f"{split}/{style}/{n:0{width}d}.jpg"
            (partial / path).parent.mkdir(parents=True, exist_ok=True)
            (partial / path).write_bytes(data)
            files.append({"path": path, "split": split, "style": style, "source": name,
                          "sha256": hashlib.sha256(data).hexdigest()})
            n += 1
    files.sort(key=lambda f: f["path"])
    manifest = {
        "format": FORMAT, "made_by": "python -m deepart paintings",
        "source": {"kind": source.kind, "path": str(source.path.resolve()),
                   "images_found": {s: chosen.found[s] for s in sorted(styles)}},
        "seed": seed, "styles": sorted(styles), "train_per_style": train, "val_per_style": val,
        "image_size": size, "padding": "black, to a square (longer side scaled to image_size)",
        "jpeg_quality": JPEG_QUALITY, "selection_sha256": selection_sha256(files),
        "skipped": dict(sorted(chosen.skipped.items())), "broken_off": chosen.broken_off, "files": files,
    }
    with open(partial / LABELS, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "style", "split"])
        writer.writerows([x["path"], x["style"], x["split"]] for x in files)
    atomic_write_text(partial / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(partial, out)
    return manifest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deepart paintings",
        description="Build the CPU-scale painting set of experiment=paintings (7 styles, 150 train / 50 val each, "
                    "224-px square-padded JPEGs) from a WikiArt copy: the ArtGAN images (folder, .zip or .tar.gz) "
                    "or the Hugging Face parquet shards. See docs/data.md.")
    parser.add_argument("--from", dest="source", required=True, metavar="PATH",
                        help="the WikiArt copy: a folder of the ArtGAN style folders (or data/wikiart), a .zip / "
                             ".tar(.gz) of them, or the huggan/wikiart parquet shards (folder, file or glob)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"the set's folder (default {DEFAULT_OUT}, where "
                                                           f"experiment=paintings reads it); must not exist yet")
    parser.add_argument("--seed", type=int, default=0, help="seed of the selection (default 0)")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), metavar="STYLE",
                        help="ArtGAN style folders (default: the 7 of experiment=paintings)")
    parser.add_argument("--train", type=int, default=TRAIN, help=f"train images per style (default {TRAIN})")
    parser.add_argument("--val", type=int, default=VAL, help=f"val images per style (default {VAL})")
    parser.add_argument("--size", type=int, default=SIZE, help=f"side of the square images in px (default {SIZE})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def go() -> dict:
        return build(args.source, args.out, tuple(args.styles), args.train, args.val, args.seed, args.size,
                     progress=not args.no_progress)

    manifest = report_errors(go)
    m = manifest
    skipped = f", {len(m['skipped'])} unreadable passed over" if m["skipped"] else ""
    print(f"wrote {len(m['files'])} paintings ({len(m['styles'])} styles x {m['train_per_style']} train + "
          f"{m['val_per_style']} val{skipped}) to {args.out}, selection {m['selection_sha256'][:12]} (manifest.json); "
          f"train on it: python train.py experiment=paintings data.root={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
