"""CSV (logger=csv): `<run>/metrics.csv`, one row per epoch (columns: step, epoch, phase, then every metric
name), rewritten whole after each epoch (a kill never leaves half a row). A resumed run keeps the rows up to
its checkpoint and replaces the rest, so no epoch appears twice. No dependency beyond the standard library."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from deepart.core import rundir
from deepart.core.errors import ConfigError, first_line
from deepart.core.files import atomic_write_text
from deepart.tracking.base import GuardedLogger, fix_hint, scalars

FIRST = ("step", "epoch", "phase")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class CSVLogger(GuardedLogger):
    label = "CSV logger"

    def __init__(self, key: str = "logger"):
        self.key = key
        self.path = Path(rundir.METRICS_CSV)
        self.rows: list[dict[str, Any]] = []

    def start(self, *, run_dir: str, resume_step: int | None = None, **_: Any) -> None:
        self.path = Path(run_dir) / rundir.METRICS_CSV
        kept = [r for r in read_rows(self.path) if int(r["step"]) <= resume_step] if resume_step is not None else []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.write(kept)
        except OSError as exc:
            raise ConfigError(f"{self.key}: cannot write {self.path} ({first_line(exc)}); {fix_hint(self.key)}") \
                from None
        self.rows, self.active, self.broken = kept, True, False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if "epoch" in metrics:  # an epoch's record (not the every-n-steps training loss)
            self.rows.append({"step": step, **scalars(metrics)})
            self.guard("writing", self.write, self.rows)

    def write(self, rows: list[dict[str, Any]]) -> None:
        names = list(FIRST)
        for row in rows:
            names += [k for k in row if k not in names]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())
