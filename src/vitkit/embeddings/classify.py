"""Judging a tower by its features: DINOv2's weighted kNN on cosine similarity, and a logistic-regression probe.

Both take train and validation rows with labels and return a `Scores` (top-1, top-5, per-class recall) per
setting; neither ever sees a validation label before scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Scores:
    """Top-1 / top-5 accuracy and per-class recall of class scores (N, C) against labels (N,)."""

    top1: float
    top5: float
    per_class: list[float]
    counts: list[int]

    @classmethod
    def of(cls, scores: torch.Tensor, labels: torch.Tensor) -> Scores:
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices  # (N, 5)
        hit = top == labels[:, None]
        classes = scores.shape[1]
        counts = torch.bincount(labels, minlength=classes)
        right = torch.bincount(labels[hit[:, 0]], minlength=classes)
        recall = (right.double() / counts.clamp(min=1)).tolist()
        return cls(hit[:, 0].double().mean().item(), hit.any(dim=1).double().mean().item(), recall, counts.tolist())

    def as_dict(self, classes: Sequence[str]) -> dict:
        return {"top1": self.top1, "top5": self.top5,
                "per_class": {c: {"images": n, "accuracy": r} for c, n, r in
                              zip(classes, self.counts, self.per_class, strict=True)}}


def encode_labels(train: Sequence[str], val: Sequence[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(classes, train label ids, val label ids); ValueError when either side has unlabelled rows or val has a
    class train has not."""
    for side, labels in (("--train", train), ("--val", val)):
        if not labels or any(not label for label in labels):
            raise ValueError(f"{side} has unlabelled rows: embed a folder of class folders (or --data digits)")
    classes = sorted(set(train))
    unseen = sorted(set(val) - set(classes))
    if unseen:
        raise ValueError(f"--val has classes that --train has not: {', '.join(unseen[:5])}")
    ids = {c: i for i, c in enumerate(classes)}
    return classes, torch.tensor([ids[c] for c in train]), torch.tensor([ids[c] for c in val])


def _flat(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"features must be rows (N, D), got {tuple(x.shape)}: embed with a pool, not --pool none")
    return x.float()


def knn(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, *, ks: Sequence[int] = (10, 20),
        temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> dict[int, torch.Tensor]:
    """DINOv2's weighted kNN: class scores (N_val, C) for each k. Rows are L2-normalised; each validation row's
    k most similar train rows vote for their class with weight exp(similarity / temperature). Validation rows go
    `chunk` at a time, so memory is chunk x N_train similarities."""
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"k must be positive integers, got {list(ks)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    train, val = F.normalize(_flat(train), dim=1), F.normalize(_flat(val), dim=1)
    if train.shape[1] != val.shape[1]:
        raise ValueError(f"--train rows have {train.shape[1]} features, --val rows {val.shape[1]}: embed both "
                         "with the same model and pool")
    classes = num_classes or int(train_labels.max()) + 1
    most = min(max(ks), len(train))
    scores = {k: torch.zeros(len(val), classes) for k in ks}
    for start in range(0, len(val), chunk):
        sims, idx = (val[start : start + chunk] @ train.T).topk(most, dim=1)  # (n, most), most similar first
        weights, labels = (sims / temperature).exp(), train_labels[idx]
        for k in ks:
            scores[k][start : start + chunk].scatter_add_(1, labels[:, :k], weights[:, :k])
    return scores


CS = tuple(10.0 ** p for p in range(-2, 4))  # the probe's grid of inverse regularisation strengths


def probe(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, *, cs: Sequence[float] = CS,
          held_out: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, float, dict[float, float]]:
    """Logistic regression on L2-normalised rows: C is chosen by accuracy on a stratified `held_out` share of the
    train rows, then the model is refit on all of them. Returns (val class probabilities, C, held-out top-1 by C)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x = F.normalize(_flat(train), dim=1).numpy()
    xv = F.normalize(_flat(val), dim=1).numpy()
    y = train_labels.numpy()
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    fit_idx, check_idx = train_test_split(np.arange(len(y)), test_size=held_out, stratify=stratify,
                                          random_state=seed)
    accuracy = {}
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x[fit_idx], y[fit_idx])
        accuracy[c] = float((clf.predict(x[check_idx]) == y[check_idx]).mean())
    best = max(cs, key=lambda c: (accuracy[c], -c))  # ties: the stronger regularisation
    clf = LogisticRegression(C=best, max_iter=2000).fit(x, y)
    probs = np.zeros((len(xv), int(y.max()) + 1))
    probs[:, clf.classes_] = clf.predict_proba(xv)
    return torch.from_numpy(probs), best, accuracy
