"""Per-task classification losses and their multi-task combination."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepart.core.errors import require, require_choice
from deepart.data.table import MISSING

WEIGHTINGS = ("uncertainty", "equal")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Focal loss (Lin et al. 2017) with optional label smoothing.

    loss = -sum_c q_c (1 - p_c)^gamma log p_c, q = the target (class indices (B,) as one-hot, or class
    probabilities (B, C), e.g. mixup's soft targets) smoothed as in `F.cross_entropy(label_smoothing=...)`.
    gamma = 0 is exactly cross-entropy.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    num_classes = logits.shape[-1]
    q = target.to(logp.dtype) if target.is_floating_point() else F.one_hot(target, num_classes).to(logp.dtype)
    if label_smoothing:
        q = q * (1 - label_smoothing) + label_smoothing / num_classes
    modulator = (1 - logp.exp()).clamp_min(0).pow(gamma) if gamma else 1.0
    loss = -(q * modulator * logp).sum(-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def mean_task_loss(task_losses: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The unweighted mean, over the tasks labelled in the batch, of their mean losses: what `train/loss` and
    `val/loss` report (the weighted objective can be negative with uncertainty weighting)."""
    present = (counts > 0).to(task_losses.dtype)
    return (task_losses * present).sum() / present.sum().clamp_min(1)


def soft_targets(labels: torch.Tensor, mix: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One task's soft targets (B, C) for mixed images and each image's weight (B,), from its labels (B,) (-1 =
    missing) and the mixing matrix `mix` (B, B) (mix[i, k]: the share of sample k in image i; deepart.data.mixing).

    The rule for missing labels: each side of a mixed image counts with its share, and only if it is labelled for
    the task. Image i's weight is the labelled share, sum_k mix[i, k] [y_k labelled]; its target is the labelled
    sides' one-hot labels in proportion to their shares. Both sides labelled: weight 1, target lam y_i +
    (1 - lam) y_k; one side: weight = its share, target its own label; none: weight 0 (no loss). As the losses
    are linear in the target, the image's loss is sum over its labelled sides of share x the loss of that label.
    """
    share = mix * (labels != MISSING).to(mix.dtype)[None, :]
    weight = share.sum(1)
    onehot = F.one_hot(labels.clamp_min(0), num_classes).to(mix.dtype)
    return share @ onehot / weight.clamp_min(1e-12)[:, None], weight


class MultiTaskLoss(nn.Module):
    """Sum of per-task losses over the tasks of a batch, labels of -1 masked out. A subclass is a criterion:
    its `criterion(logits, target)` gives the per-sample loss of one task; conf/loss/<name>.yaml picks one by
    `_target_` (FocalLoss, CrossEntropyLoss) with its own keys, `weighting` being common to all.

    weighting="uncertainty": L = sum_t exp(-s_t) L_t + s_t, with s_t = log sigma_t^2 learned
    (Kendall et al. 2018); "equal": L = sum_t L_t. A task with no label in the batch contributes nothing.
    """

    def __init__(self, tasks: dict[str, list[str]] | list[str], weighting: str = "uncertainty"):
        super().__init__()
        require_choice("loss.weighting", weighting, WEIGHTINGS)
        self.task_names = list(tasks)
        self.weighting = weighting
        self.log_vars = nn.Parameter(torch.zeros(len(self.task_names)), requires_grad=weighting == "uncertainty")

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (B,) of one task's logits (B, C) against class indices (B,) or class probabilities
        (B, C)."""
        raise NotImplementedError(f"{type(self).__name__} must define criterion(logits, target)")

    def per_sample(self, logits: torch.Tensor, labels: torch.Tensor,
                   mix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss of one task (0 where the label is missing) and each sample's weight: the label mask,
        or for mixed images (`mix`, the batch's mixing matrix) the labelled share of each (`soft_targets`)."""
        if mix is None:
            mask = labels != MISSING
            return self.criterion(logits, labels.clamp_min(0)) * mask, mask
        target, weight = soft_targets(labels, mix, logits.shape[-1])
        return self.criterion(logits, target) * weight, weight

    def forward(self, logits: dict[str, torch.Tensor], labels: torch.Tensor, mix: torch.Tensor | None = None):
        """Returns (total loss, per-task mean losses (T,) detached, per-task label counts (T,)). With `mix` (mixup /
        CutMix) a task's mean loss is over its labelled shares and its count is their sum."""
        total = logits[self.task_names[0]].new_zeros((), dtype=torch.float32)
        task_losses, counts = [], []
        for t, name in enumerate(self.task_names):
            loss, mask = self.per_sample(logits[name], labels[:, t], mix)
            n = mask.sum()
            mean = loss.sum() / n.clamp_min(1)
            present = (n > 0).float()
            if self.weighting == "uncertainty":
                total = total + present * (torch.exp(-self.log_vars[t]) * mean + self.log_vars[t])
            else:
                total = total + mean
            task_losses.append(mean.detach())
            counts.append(n)
        return total, torch.stack(task_losses), torch.stack(counts)

    def task_weights(self) -> dict[str, float]:
        """Current weight exp(-s_t) of each task (1.0 with equal weighting)."""
        return {name: float(torch.exp(-self.log_vars[t].detach())) for t, name in enumerate(self.task_names)}


def _check_smoothing(label_smoothing: float) -> None:
    require(isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1, "loss.label_smoothing",
            label_smoothing, "a number in [0, 1)")


class FocalLoss(MultiTaskLoss):
    """Focal loss per task (`focal_loss`; gamma=0 is cross-entropy), optionally against smoothed targets."""

    def __init__(self, tasks: dict[str, list[str]] | list[str], gamma: float = 2.0, label_smoothing: float = 0.0,
                 weighting: str = "uncertainty"):
        super().__init__(tasks, weighting)
        require(isinstance(gamma, (int, float)) and gamma >= 0, "loss.gamma", gamma, "a number >= 0")
        _check_smoothing(label_smoothing)
        self.gamma, self.label_smoothing = gamma, label_smoothing

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.label_smoothing, reduction="none")


class CrossEntropyLoss(MultiTaskLoss):
    """Cross-entropy per task, optionally against smoothed targets ((1 - eps) on the true class, eps / C spread
    over all classes)."""

    def __init__(self, tasks: dict[str, list[str]] | list[str], label_smoothing: float = 0.0,
                 weighting: str = "uncertainty"):
        super().__init__(tasks, weighting)
        _check_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing, reduction="none")
