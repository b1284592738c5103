"""Builders for the tests: the ArtGAN image layout for the real label excerpt (tests/fixtures/wikiart), as a
folder, a zip (optionally with damaged members) or a tar, with tiny JPEGs."""
from __future__ import annotations

import io
import shutil
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from deepart.data.wikiart import read_split, spellings

EXCERPT = Path(__file__).parent / "fixtures" / "wikiart"


def labels_root(root: Path) -> Path:
    """A data root holding the excerpt's label files (no images)."""
    root.mkdir(parents=True, exist_ok=True)
    for f in EXCERPT.iterdir():
        if f.suffix in (".csv", ".txt"):
            shutil.copy(f, root / f.name)
    return root


def stored_names() -> list[str]:
    """Every image the excerpt lists, under the name the archive stores it (repaired UTF-8 spelling)."""
    listed: dict[str, None] = {}
    for f in sorted(EXCERPT.glob("*_*.csv")):
        for p in read_split(f, num_classes=10**6)["path"]:
            listed[spellings(p)[1] if not p.isascii() else p] = None
    return list(listed)


def jpeg(i: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def make_tree(folder: Path) -> Path:
    for i, name in enumerate(stored_names()):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg(i))
    return folder


def _patch_member(data: bytearray, name: str, **fields: int) -> None:
    """Set header fields of one member in both its local header and its central directory entry."""
    raw = name.encode()
    local = {"method": 8, "crc": 14, "size": 22}
    central = {"method": 10, "crc": 16, "size": 24}
    for sig, offsets, name_at, len_at in ((b"PK\x03\x04", local, 30, 26), (b"PK\x01\x02", central, 46, 28)):
        pos = 0
        while True:
            pos = data.index(sig, pos)
            n = struct.unpack("<H", data[pos + len_at:pos + len_at + 2])[0]
            if data[pos + name_at:pos + name_at + n] == raw:
                break
            pos += 4
        for key, value in fields.items():
            fmt = "<H" if key == "method" else "<I"
            data[pos + offsets[key]:pos + offsets[key] + struct.calcsize(fmt)] = struct.pack(fmt, value)


def make_zip(path: Path, bad_crc: str | None = None, cut_short: str | None = None, top: str = "wikiart") -> Path:
    """The excerpt's images as `<top>/<Style>/<file>.jpg`. `bad_crc`: that member's stored bytes get one
    flipped byte (the CRC no longer matches); `cut_short`: that member's deflate stream stops halfway while
    its headers announce the whole file (what a cut-off copy of a member looks like)."""
    names = stored_names()
    whole = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, name in enumerate(names):
            member = f"{top}/{name}" if top else name
            body = jpeg(i)
            if name == cut_short:
                comp = zlib.compressobj(6, zlib.DEFLATED, -15)
                stream = comp.compress(body) + comp.flush()
                whole[member] = body
                body = stream[: len(stream) // 2]
            zf.writestr(member, body)
    data = bytearray(path.read_bytes())
    for member, body in whole.items():
        _patch_member(data, member, method=8, crc=zlib.crc32(body), size=len(body))
    if bad_crc:
        body = jpeg(names.index(bad_crc))
        at = data.index(body)
        data[at + len(body) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def make_tar(path: Path, mode: str = "w:gz", top: str = "wikiart", extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, mode) as tf:
        for info in extra or []:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
        for i, name in enumerate(stored_names()):
            body = jpeg(i)
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return path


# ---------------------------------------------------------------------------------------- Hugging Face parquet
HF_NAMES = {  # a few classes of each task, with the "Unknown" classes where huggan/wikiart has them
    "artist": ["Unknown Artist", "boris-kustodiev", "camille-pissarro", "childe-hassam"],
    "genre": ["abstract_painting", "cityscape", "landscape", "portrait", "Unknown Genre"],
    "style": ["Abstract_Expressionism", "Baroque", "Cubism", "Impressionism"],
}


def hf_schema(names: dict[str, list[str]] | None = None, columns: tuple[str, ...] = ("artist", "genre", "style")):
    """The hub dataset's schema: image {bytes, path}, integer ClassLabel columns, features in the metadata."""
    import json

    import pyarrow as pa

    names = names or HF_NAMES
    features = {"image": {"_type": "Image"},
                **{c: {"names": names[c], "_type": "ClassLabel"} for c in columns}}
    fields = [pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))]
    fields += [pa.field(c, pa.int64()) for c in columns]
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features}})})


def make_parquet(path: Path, n: int = 36, row_group_size: int = 8, corrupt: tuple[int, ...] = (5,),
                 unknown_artist: tuple[int, ...] = (0, 7), unknown_genre: tuple[int, ...] = (3,),
                 columns: tuple[str, ...] = ("artist", "genre", "style"), labels: dict | None = None) -> Path:
    """`n` rows; row i has style i % 4 (so every style has n/4 rows), a tiny JPEG (a few rows: bytes that are
    no image), artist / genre from the class lists ("Unknown" for the rows named)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": b"not a jpeg" if i in corrupt else jpeg(i), "path": None} for i in range(n)]
    data = {"artist": [0 if i in unknown_artist else 1 + i % 3 for i in range(n)],
            "genre": [4 if i in unknown_genre else i % 4 for i in range(n)],
            "style": [i % 4 for i in range(n)], **(labels or {})}
    table = pa.table({"image": images, **{c: data[c] for c in columns}}, schema=hf_schema(columns=columns))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path
