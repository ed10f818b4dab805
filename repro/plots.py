"""PNG plots for run bundles (matplotlib, Agg): confusion matrices, curves, per-fold accuracy,
value histograms. Each function writes one file atomically and returns its path."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from repro.atomic import write_bytes


def _figure(width: float = 6.4, height: float = 4.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return plt, fig, ax


def _save(plt, fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    # No timestamps or software versions in the file: same data, same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    write_bytes(path, buf.getvalue())
    return path


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: list[str], path: Path, *, title: str) -> Path:
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    size = max(5.0, 0.32 * len(labels) + 3)
    plt, fig, ax = _figure(size + 1, size)
    rows = m.sum(axis=1, keepdims=True)
    shown = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels=labels, rotation=60, ha="right", fontsize=7 if len(labels) > 12 else 8)
    ax.set_yticks(range(len(labels)), labels=labels, fontsize=7 if len(labels) > 12 else 8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 12:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)


def epoch_curves(history: list[dict[str, Any]], keys: list[str], path: Path, *, title: str) -> Path:
    plt, fig, ax = _figure()
    epochs = [h["epoch"] + 1 for h in history]
    for key in keys:
        ax.plot(epochs, [h[key] for h in history], marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)


def fold_accuracy(per_fold: dict[str, float], path: Path, *, title: str, reference: float | None = None) -> Path:
    plt, fig, ax = _figure()
    names = list(per_fold)
    values = [per_fold[n] * 100 for n in names]
    bars = ax.bar(names, values, color="#4C72B0")
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.5, f"{value:.1f}", ha="center", fontsize=8)
    if reference is not None:
        ax.axhline(reference * 100, color="#C44E52", linestyle="--", label=f"paper {reference * 100:.1f}%")
        ax.legend()
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)


def loss_curves(curves: dict[str, tuple[list[int], list[float]]], path: Path, *, title: str,
                targets: list[float] | None = None, ylabel: str = "test loss",
                marks: dict[str, float] | None = None) -> Path:
    """Loss curves; targets as dotted horizontal lines, marks (label -> step) as dashed vertical ones."""
    plt, fig, ax = _figure()
    for name, (steps, losses) in curves.items():
        ax.plot(steps, losses, marker=".", label=name)
    for t in targets or []:
        ax.axhline(t, color="grey", linestyle=":", linewidth=0.8)
    for label, step in (marks or {}).items():
        ax.axvline(step, color="#C44E52", linestyle="--", linewidth=0.9, label=f"{label} (step {step:g})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)


def histogram(values: Sequence[float], path: Path, *, title: str, xlabel: str, bins: int = 60) -> Path:
    import numpy as np

    v = np.asarray(values, dtype=float)
    plt, fig, ax = _figure()
    ax.hist(v, bins=bins, color="#4C72B0")
    ax.axvline(0, color="#C44E52", linestyle="--", label=f"zero: {np.mean(v < 0) * 100:.1f}% below")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.legend()
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)


def forest(rows: Sequence[dict[str, Any]], path: Path, *, title: str, xlabel: str) -> Path:
    """One row per switch: the mean effect, its interval as a bar, zero as a dashed line."""
    import numpy as np

    plt, fig, ax = _figure(7.0, max(2.5, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        if r.get("mean") is None:
            continue
        color = "#C44E52" if r.get("verdict") == "moves the number" else "#4C72B0"
        if r.get("low") is not None:
            ax.plot([r["low"], r["high"]], [yi, yi], color=color, linewidth=2)
        ax.plot([r["mean"]], [yi], "o", color=color)
    ax.axvline(0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yticks(y, labels=[r["switch"] for r in rows], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)
