"""A phase's progress: epochs done, the best epoch so far, early stopping and the per-epoch history."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from deepart.core.config import OBJECTIVE


@dataclass
class PhaseState:
    """Progress of one phase; stored in its checkpoints (`Checkpoint.progress`)."""

    epoch: int = 0                      # completed epochs
    best_metric: float = -1.0           # best OBJECTIVE so far
    best_epoch: int = 0                 # the epoch that reached it (0 = none yet)
    bad_epochs: int = 0                 # epochs since the last improvement by more than min_delta
    completed: bool = False
    final: dict[str, float] = field(default_factory=dict)   # val metrics of the last epoch
    best: dict[str, float] = field(default_factory=dict)    # val metrics of the best epoch
    history: list[dict[str, float]] = field(default_factory=list)  # one record per epoch

    def end_epoch(self, val: dict[str, float], record: dict[str, Any], *, epochs: int, min_delta: float,
                  patience: int | None) -> tuple[bool, bool]:
        """Book one finished epoch: its val metrics and its history record. Returns (improved, stop):
        whether it is the best epoch so far (best.pt), and whether early stopping ends the phase."""
        self.epoch += 1
        self.final = val
        self.history.append(record)
        metric, first = val[OBJECTIVE], self.best_epoch == 0
        improved = first or metric > self.best_metric
        self.bad_epochs = 0 if first or metric > self.best_metric + min_delta else self.bad_epochs + 1
        if improved:
            self.best_metric, self.best_epoch, self.best = metric, self.epoch, val
        stop = patience is not None and self.bad_epochs >= patience
        self.completed = self.epoch == epochs or stop
        return improved, stop

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """What metrics.json reports of a phase."""
        return {"final": self.final, "best": self.best, "best_epoch": self.best_epoch, "epochs": self.epoch}
