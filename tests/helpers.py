"""Synthetic task data with a learnable signal, shared by the fixtures and the tests."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = {
    "sport": ["goal", "match", "team", "score", "coach", "league"],
    "money": ["bank", "stock", "market", "price", "trade", "profit"],
    "happy": ["joy", "smile", "laugh", "sunny", "great", "love"],
    "sad": ["tears", "cry", "gloom", "lonely", "loss", "grief"],
}
FILLER = ["the", "a", "today", "really", "very", "we", "it", "was", "so", "and"]
TASK_LABELS = {"topics": ["money", "sport"], "moods": ["happy", "sad"]}


def synthetic_rows(labels: list[str], count: int, seed: int) -> list[tuple[str, str]]:
    """Texts whose label is given away by a keyword, so a tiny model can learn them quickly."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, 4) + rng.sample(WORDS[label], 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
