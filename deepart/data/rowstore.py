"""Images stored as bytes in parquet shards (the Hugging Face layout: a struct column `image` {bytes, path}).

A table row names such an image as `<shard>.parquet/<row>` (the row's index in that shard, relative to the
table's image root). `read_image_bytes` reads it inside whichever process asks (the DataLoader workers): each
process keeps its open shards and the one row group it read last, so its memory holds at most one row group
of images, never a shard. Reading rows in order (the preprocessing cache does) reads each row group once.
"""
from __future__ import annotations

import bisect
import os
from pathlib import Path

from deepart.core.cli import install_line
from deepart.core.errors import ConfigError

INSTALL_HINT = f"the parquet data needs pyarrow: {install_line('parquet')} (or pip install pyarrow)"
SHARD_SUFFIX = ".parquet"


def import_pyarrow():
    """pyarrow.parquet, or a ConfigError with the install line."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return pq


def row_ref(shard: str, row: int) -> str:
    return f"{shard}/{row}"


def parse_row_ref(path: str | Path) -> tuple[str, int] | None:
    """(shard path, row) of a `<shard>.parquet/<row>` reference, or None for an ordinary file path."""
    text = str(path)
    shard, sep, row = text.rpartition("/")
    if sep and row.isdigit() and shard.endswith(SHARD_SUFFIX):
        return shard, int(row)
    return None


class _Reader:
    """The open shards and the last row group read, of one process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.files: dict[str, tuple[object, list[int]]] = {}
        self.group: tuple[str, int, object] | None = None  # (shard, row group index, bytes array)

    def shard(self, path: str):
        if path not in self.files:
            pq = import_pyarrow()
            pf = pq.ParquetFile(path, memory_map=False, pre_buffer=False)
            starts, total = [], 0
            for i in range(pf.metadata.num_row_groups):
                starts.append(total)
                total += pf.metadata.row_group(i).num_rows
            self.files[path] = (pf, starts + [total])
        return self.files[path]

    def read(self, path: str, row: int) -> bytes | None:
        pf, starts = self.shard(path)
        if not 0 <= row < starts[-1]:
            raise IndexError(f"{path} has {starts[-1]} rows, not row {row}")
        group = bisect.bisect_right(starts, row) - 1
        if self.group is None or self.group[:2] != (path, group):
            self.group = None  # drop the previous row group before reading the next one
            table = pf.read_row_group(group, columns=["image"], use_threads=False)
            column = table.column("image").combine_chunks()
            images = column.field("bytes") if hasattr(column.type, "get_field_index") else column
            self.group = (path, group, images)
        value = self.group[2][row - starts[group]]
        return value.as_py() if value.is_valid else None


_reader: _Reader | None = None


def read_image_bytes(shard: str | Path, row: int) -> bytes | None:
    """The encoded image of row `row` of a shard (None when the row has no bytes)."""
    global _reader
    if _reader is None or _reader.pid != os.getpid():  # a forked worker starts with its own reader
        _reader = _Reader()
    return _reader.read(str(shard), row)
