"""How much of each ArtGAN split is on disk: listed / present / damaged (in the archive) / missing.

`python -m deepart download wikiart --check` prints it; a split is badly incomplete (non-zero exit)
when more than `max_absent` (default 1%) of its listed images are damaged or missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from deepart.core.errors import DataError
from deepart.data.archive import DAMAGED_FILE, read_damaged
from deepart.data.wikiart import TASKS, read_class_list, read_split, spellings

MAX_ABSENT = 0.01  # a split with more than this share of its listed images absent is badly incomplete
EXAMPLES = 3


@dataclass
class SplitCoverage:
    task: str
    split: str
    listed: int = 0
    present: int = 0
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def absent_share(self) -> float:
        return (len(self.damaged) + len(self.missing)) / max(self.listed, 1)


def find_listed(path: str, image_root: Path, damaged: set[str]) -> str:
    """'present', 'damaged' or 'missing' for one listed path (any of its spellings)."""
    names = [path] if path.isascii() else spellings(path)
    if any((image_root / n).is_file() for n in names):
        return "present"
    return "damaged" if any(n in damaged for n in names) else "missing"


def coverage(root: Path, images_dir: str = "images", tasks: list[str] | None = None) -> list[SplitCoverage]:
    """Coverage of every split file under `root` by the images in `root/images_dir`."""
    root = Path(root)
    image_root = root / images_dir
    damaged = set(read_damaged(root))
    rows = []
    for task in tasks or TASKS:
        n_classes = len(read_class_list(root / f"{task}_class.txt"))
        for split in ("train", "val"):
            paths = pd.unique(read_split(root / f"{task}_{split}.csv", n_classes)["path"])
            cov = SplitCoverage(task, split, listed=len(paths))
            for p in paths:
                state = find_listed(p, image_root, damaged)
                if state == "present":
                    cov.present += 1
                else:
                    getattr(cov, state).append(p)
            rows.append(cov)
    return rows


def format_coverage(rows: list[SplitCoverage], root: Path, max_absent: float = MAX_ABSENT) -> str:
    damaged_file = Path(root) / DAMAGED_FILE
    lines = [f"coverage of {Path(root) / 'images'} by the ArtGAN split files"
             + (f" (damaged list: {damaged_file})" if damaged_file.is_file() else ""),
             f"{'task':<7} {'split':<5} {'listed':>7} {'present':>7} {'damaged':>7} {'missing':>7}  status"]
    for r in rows:
        status = "BADLY INCOMPLETE" if r.absent_share > max_absent else "ok"
        lines.append(f"{r.task:<7} {r.split:<5} {r.listed:>7,} {r.present:>7,} {len(r.damaged):>7,} "
                     f"{len(r.missing):>7,}  {status}")
    for r in rows:
        for kind in ("damaged", "missing"):
            names = getattr(r, kind)
            if names:
                more = f" (+{len(names) - EXAMPLES:,} more)" if len(names) > EXAMPLES else ""
                lines.append(f"  {r.task} {r.split} {kind}: {', '.join(names[:EXAMPLES])}{more}")
    return "\n".join(lines)


def check(root: Path, max_absent: float = MAX_ABSENT) -> tuple[str, bool]:
    """(the coverage table, whether every split is complete enough)."""
    root = Path(root)
    if not (root / "images").is_dir():
        raise DataError(f"no images at {root / 'images'}: get them with `python -m deepart download wikiart "
                        f"--images` or `--from <zip, tar or folder>`")
    rows = coverage(root)
    return format_coverage(rows, root, max_absent), all(r.absent_share <= max_absent for r in rows)
