"""Predictions from logits: softmax, top-k, labels; and parsing Triton's classification strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelScore:
    """One class with its probability."""

    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Prediction:
    """The top class of one input, its probability, the top-k list and the latency of the request that carried it.

    Several inputs of one call may travel in one request: `latency_ms` is then that request's (the whole batch's),
    shared by its `batch_size` inputs, not a per-input figure.
    """

    label: str
    index: int
    score: float
    top_k: tuple[LabelScore, ...]
    latency_ms: float
    source: str = ""
    """What was classified (the file's path as given, or `#i` for in-memory inputs)."""
    batch_size: int = 1
    """How many inputs the request that measured `latency_ms` carried."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float64)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def predictions_from_logits(
    logits: np.ndarray, labels: Sequence[str], top_k: int, latency_ms: float, sources: Sequence[str]
) -> list[Prediction]:
    """One `Prediction` per row of `logits` (batch, classes), all from one request of `len(sources)` inputs."""
    probabilities = softmax(np.asarray(logits).reshape(len(sources), -1))
    k = max(1, min(top_k, probabilities.shape[-1]))
    predictions = []
    for row, source in zip(probabilities, sources):
        order = np.argsort(-row, kind="stable")[:k]
        ranked = tuple(LabelScore(label=_label(labels, int(i)), index=int(i), score=float(row[i])) for i in order)
        best = ranked[0]
        predictions.append(Prediction(best.label, best.index, best.score, ranked, latency_ms, source, len(sources)))
    return predictions


def parse_classification(entries: np.ndarray) -> list[tuple[float, int, str]]:
    """Parse Triton classification strings `b"value:index:label"` (label optional) into tuples."""
    parsed = []
    for entry in np.asarray(entries).reshape(-1):
        text = entry.decode("utf-8") if isinstance(entry, bytes) else str(entry)
        parts = text.split(":", 2)
        value, index = float(parts[0]), int(parts[1])
        parsed.append((value, index, parts[2] if len(parts) > 2 else str(index)))
    return parsed


def _label(labels: Sequence[str], index: int) -> str:
    return labels[index] if index < len(labels) else str(index)
