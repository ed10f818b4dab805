"""Classification metrics (sklearn, as PPDPP's sft.py computes them) and metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from repro.atomic import appending


def classification(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro P/R/F1 exactly as sft.py prints them (sklearn, average='macro',
    zero_division=0, no `labels=`: averaged over the classes present in y_true or y_pred),
    weighted F1, per-class P/R/F1/support over all labels, and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        precision_score,
        recall_score,
    )

    out: dict[str, Any] = {
        "examples": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)) if y_true else 0.0,
        "macro_precision": float(precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "macro_recall": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
    }
    index = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=index, zero_division=0)
    out["per_class"] = [
        {"label": labels[i], "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i in index
    ]
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=index).tolist()
    return out


class MetricsWriter:
    """metrics.jsonl: one JSON object per line (per epoch, per evaluation). Opening it keeps the
    first `keep` records (what existed when a checkpoint was saved) and drops the rest."""

    def __init__(self, path: Path, keep: int = 0):
        self.path = Path(path)
        if self.path.exists():
            if keep > 0:
                from repro.atomic import write_text

                kept = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()][:keep]
                write_text(self.path, "".join(line + "\n" for line in kept))
            else:
                self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        appending(self.path, json.dumps(record, sort_keys=True) + "\n")  # a full disk leaves no half line

    def lines(self) -> int:
        return count(self.path)


def count(path: Path) -> int:
    """Records in a metrics file (0 when it does not exist)."""
    if not Path(path).exists():
        return 0
    return sum(1 for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())

