"""Writing a file so that a kill or a crash at any moment leaves either the old file or the complete new one."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` into a temporary file next to `path`, flushed to disk, then renamed over `path`."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of `text`, UTF-8 encoded."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
