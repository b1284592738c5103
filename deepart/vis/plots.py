"""Pictures: attention and saliency overlays, image grids with captions, confusion matrices, reliability diagrams
and coverage curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def pyplot():
    """matplotlib.pyplot with the Agg backend (files only, no display): every figure of deepart is drawn
    through this."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def upsample_map(weights: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map bilinearly upsampled to `size` (H, W) and scaled to [0, 1]."""
    t = torch.as_tensor(np.asarray(weights, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend an (H, W) map in [0, 1] over an (H, W, 3) uint8 image; returns uint8 (H, W, 3)."""
    from matplotlib import colormaps

    colours = colormaps[cmap](heat)[..., :3] * 255
    return np.clip((1 - alpha) * image.astype(np.float32) + alpha * colours, 0, 255).astype(np.uint8)


def attention_overlay(image_chw: torch.Tensor, attention: torch.Tensor | np.ndarray) -> np.ndarray:
    """Overlay of a (h, w) attention map on a uint8 (3, H, W) image tensor."""
    image = image_chw.permute(1, 2, 0).cpu().numpy()
    return overlay(image, upsample_map(attention, image.shape[:2]))


def plot_confusion(cm: np.ndarray, class_names: list[str], path: str | Path, title: str = "",
                   normalize: bool = True) -> Path:
    """Save a confusion matrix (rows = truth, normalised per true class by default) as a PNG."""
    plt = pyplot()

    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    n = len(class_names)
    side = max(4.0, 0.32 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix" + (" (row-normalised)" if normalize else ""))
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, f"{shown[i, j]:.2f}" if normalize else int(cm[i, j]), ha="center",
                            va="center", fontsize=7, color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path, dpi=110)


def plot_reliability(curves: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Reliability diagram: per curve (legend text -> (3, n_bins) count / confidence sum / correct sum of
    equal-width confidence bins), the accuracy of each non-empty bin against its mean confidence, with the
    diagonal of perfect calibration; below, how many images each bin holds."""
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for n, (label, bins) in enumerate(curves.items()):
        count, confidence, correct = np.asarray(bins, dtype=float)
        edges = np.linspace(0, 1, len(count) + 1)
        full = count > 0
        ax.plot(confidence[full] / count[full], correct[full] / count[full], marker="o", label=label)
        hist.bar(edges[:-1] + (n + 0.5) * np.diff(edges) / len(curves), count, width=np.diff(edges) / len(curves),
                 alpha=0.7, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title or "reliability diagram")
    ax.legend(fontsize=7, loc="upper left")
    hist.set(xlabel="confidence (top probability)", ylabel="images")
    return save_figure(fig, path, dpi=110)


def plot_coverage(coverage: np.ndarray, accuracy: np.ndarray, points: list[dict], path: str | Path,
                  title: str = "") -> Path:
    """Accuracy of the answers against coverage (the share of images answered, most confident first), with the
    `points` ({"threshold", "coverage", "accuracy"}) of a few confidence thresholds marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(coverage, accuracy, label="answer the most confident first")
    for p in points:
        if p["accuracy"] is not None:
            ax.plot(p["coverage"], p["accuracy"], "o", color="black")
            ax.annotate(f"≥ {p['threshold']:g}", (p["coverage"], p["accuracy"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="coverage (share of images answered)",
           ylabel="accuracy of the answers", title=title or "coverage vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path, dpi=110)


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """tight_layout, write the PNG (creating its folder), close the figure."""
    plt = pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_image_grid(images: list[np.ndarray], titles: list[str], path: str | Path, ncols: int,
                    suptitle: str = "", panel_inches: float = 2.6) -> Path:
    """Save uint8 (H, W, 3) images as a grid PNG, each with its (multi-line) title."""
    plt = pyplot()

    n = max(1, len(images))
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    height = (panel_inches + 0.16 * lines) * nrows + 0.4 * bool(suptitle)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(panel_inches * ncols, height))
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return save_figure(fig, path)
