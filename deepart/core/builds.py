"""Resumable builds of data derived from a model: work split into chunks of items, each chunk written atomically
as it completes, so that a build killed at any moment and run again continues after its last complete chunk
(the vector index of deepart.inference.index, the backbone-feature cache of deepart.training.feature_cache);
and the digest of a model's tensors that says which model a build belongs to."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deepart.core import faults
from deepart.core.errors import DataError, first_line
from deepart.core.files import atomic_write

CHUNKS = "chunks"


def update_with_tensors(digest, state: dict[str, torch.Tensor]) -> None:
    """Feed every tensor of a state dict (name, shape, dtype and bytes) into a hashlib digest: equal digests
    mean equal tensors."""
    for name, tensor in state.items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def read_record(path: Path, fmt: str, unreadable: str, foreign: str) -> dict | None:
    """A build's JSON record (None when there is none): a dict whose "format" is `fmt`. An unreadable file raises
    DataError "<path>: unreadable (<why>); <unreadable>", another format "<path>: <foreign>"."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({first_line(exc)}); {unreadable}") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise DataError(f"{path}: {foreign}")
    return record


@dataclass
class ChunkedBuild:
    """`n_items` items in chunks of `chunk_size`, chunk c holding items c * chunk_size ... as `<folder>/chunks/
    <c>.npz`; after each chunk is written the process passes fault point `fault_point` (deepart.core.faults)."""

    folder: Path
    n_items: int
    chunk_size: int
    fault_point: str

    @property
    def n_chunks(self) -> int:
        return -(-self.n_items // self.chunk_size)

    def path(self, chunk: int) -> Path:
        return self.folder / CHUNKS / f"{chunk:05d}.npz"

    def rows(self, chunk: int) -> range:
        return range(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n_items))

    def done(self) -> list[int]:
        return [c for c in range(self.n_chunks) if self.path(c).is_file()]

    def run(self, compute: Callable[[range, tqdm], dict[str, np.ndarray]], desc: str, bar: bool = True,
            unit: str = "img") -> list[int]:
        """`compute(rows, bar)` -> the arrays of a chunk, for every chunk not yet on disk, in order (it advances
        `bar` as it goes); returns the chunks that were already done (a resumed build: not empty)."""
        done = self.done()
        (self.folder / CHUNKS).mkdir(parents=True, exist_ok=True)
        with tqdm(total=self.n_items, initial=sum(len(self.rows(c)) for c in done), desc=desc, unit=unit,
                  dynamic_ncols=True, disable=not bar) as progress:
            for chunk in range(self.n_chunks):
                if chunk in done:
                    continue
                arrays = compute(self.rows(chunk), progress)
                atomic_write(self.path(chunk), lambda f, a=arrays: np.savez(f, **a))
                faults.point(self.fault_point)
        return done

    def load(self) -> Iterable[np.lib.npyio.NpzFile]:
        """The chunks' arrays, in order (all of them must be done)."""
        return (np.load(self.path(c)) for c in range(self.n_chunks))

    def clear(self) -> None:
        shutil.rmtree(self.folder / CHUNKS, ignore_errors=True)
