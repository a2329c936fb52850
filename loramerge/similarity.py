"""How alike two tasks are, three ways: their data, their label names and words, their adapters.

The vision-adapter study found that adapters trained on dissimilar data merge better; these
measures let the report test that on our tasks. Each one is a plain function of arrays or
sets, so it can be checked on hand-made inputs, and the stage `similarity` only feeds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy.linalg import subspace_angles
from sklearn.feature_extraction.text import CountVectorizer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from loramerge.batching import TokenizedTexts
from loramerge.model import pooled_features
from loramerge.updates import TaskUpdate


def embed_texts(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    batch_size: int,
    pooling: str,
) -> np.ndarray:
    """One pooled base-encoder vector per text (float32, also when the encoder ran under bf16 autocast)."""
    return pooled_features(encoder, TokenizedTexts(tokenizer, texts, None, max_length), batch_size, pooling).numpy()


def cosine(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Cosine of two arrays of any shape, flattened; NaN when either is all zeros (no direction)."""
    a, b = torch.as_tensor(a, dtype=torch.float64).flatten(), torch.as_tensor(b, dtype=torch.float64).flatten()
    if not a.any() or not b.any():
        return float("nan")
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def linear_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Squared MMD with a linear kernel between two sets of vectors (rows).

    With k(u, v) = u·v the biased MMD² reduces exactly to the squared distance between the
    sets' means, so it costs one pass however many texts; zero for identical sets.
    """
    return float(np.sum((np.asarray(x, np.float64).mean(0) - np.asarray(y, np.float64).mean(0)) ** 2))


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|a ∩ b| / |a ∪ b| of two sets; NaN when both are empty."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else float("nan")


def vocabulary(texts: Sequence[str]) -> set[str]:
    """The lower-cased word types of some texts, tokenised as scikit-learn's bag of words does."""
    return set(CountVectorizer(lowercase=True).fit(texts).vocabulary_) if texts else set()


def subspace_alignment(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Mean cos² of the principal angles between the column spaces of two updates.

    1 when one space contains the other, 0 when orthogonal; two random rank-r spaces in
    d dimensions score about r/d. The rank of each space is found by scipy's SVD at the
    arrays' own precision, so an exactly low-rank ΔW counts as rank r, not full rank.
    NaN when either update is zero (it has no column space).
    """
    a, b = np.asarray(a), np.asarray(b)
    if not a.any() or not b.any():
        return float("nan")
    return float(np.mean(np.cos(subspace_angles(a, b)) ** 2))


def update_similarity(a: TaskUpdate, b: TaskUpdate) -> dict[str, float]:
    """Cosine of the two adapters' whole updates (every layer's ΔW flattened together), and
    their subspace alignment averaged over layers (each layer weighs once)."""
    layers = a.layers
    deltas = [(a.delta(layer), b.delta(layer)) for layer in layers]
    whole_a = torch.cat([da.flatten() for da, _ in deltas])
    whole_b = torch.cat([db.flatten() for _, db in deltas])
    return {
        "adapter_cosine": cosine(whole_a, whole_b),
        "adapter_alignment": float(np.nanmean([subspace_alignment(da.numpy(), db.numpy()) for da, db in deltas])),
    }
