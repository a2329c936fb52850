"""Stage `similarity`: every pair of tasks scored for similarity of data, labels and words, and adapters.

Writes metrics/similarity.json (`dvc metrics show` reads it); the report correlates these
numbers with how well each pair and triple merged. Triples are scored in the report as the
mean of their member pairs, so every pair inside a configured triple is scored here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loramerge import paths
from loramerge.atomic import check_writable, write_json
from loramerge.backbone import load_encoder, load_tokenizer
from loramerge.batching import PixelImages
from loramerge.combinations import scored_pairs
from loramerge.config import Params
from loramerge.data import load_labels, load_split, prepared_splits, stratified_subsample
from loramerge.lists import split_combination
from loramerge.lora import load_updates
from loramerge.model import pooled_features
from loramerge.precision import Precision, resolve
from loramerge.records import SIMILARITY_MEASURES
from loramerge.similarity import cosine, embed_texts, jaccard, linear_mmd, update_similarity, vocabulary
from loramerge.tracking import metric_key, stage_run

HELP = "score every pair of tasks for data, label/vocabulary and adapter similarity"
ARGUMENTS = {}


@dataclass
class TaskProfile:
    """What the data and label measures need of one task: its sampled texts' embeddings and words (none for images:
    their vocabulary overlap is NaN), its labels."""

    embeddings: np.ndarray
    vocabulary: set[str]
    labels: set[str]


def task_profile(params: Params, task: str, encoder, tokenizer) -> TaskProfile:
    """The task's training texts (or images: no words), capped at `similarity.max_texts` by the same stratified
    sampler as prepare."""
    frame = stratified_subsample(load_split(task, "train"), params.similarity.max_texts, params.data.subsample_seed)
    labels = {label.lower() for label in load_labels(task)}
    if "image" in frame.columns:
        images = PixelImages(tokenizer, frame["image"].tolist(), None)
        embeddings = pooled_features(encoder, images, params.evaluate.batch_size, params.backbone.pooling).numpy()
        return TaskProfile(embeddings, set(), labels)
    texts = frame["text"].tolist()
    embeddings = embed_texts(
        encoder, tokenizer, texts, params.backbone.max_length, params.evaluate.batch_size, params.backbone.pooling
    )
    return TaskProfile(embeddings, vocabulary(texts), labels)


def pair_measures(a: TaskProfile, b: TaskProfile) -> dict[str, float]:
    return {
        "data_cosine": cosine(a.embeddings.mean(0), b.embeddings.mean(0)),
        "data_mmd": linear_mmd(a.embeddings, b.embeddings),
        "label_jaccard": jaccard(a.labels, b.labels),
        "vocab_jaccard": jaccard(a.vocabulary, b.vocabulary),
    }


def measure_pairs(params: Params, precision: Precision) -> dict[str, dict[str, float]]:
    """Every measure of `SIMILARITY_MEASURES` for every scored pair; the texts are embedded in `precision`, the adapters'
    updates compared in float32/64 whatever it is."""
    pairs = scored_pairs(params)
    tasks = list(dict.fromkeys(t for pair in pairs for t in split_combination(pair)))
    tokenizer, encoder = load_tokenizer(params.backbone), load_encoder(params.backbone)
    with precision.context():  # before load_updates wraps the encoder
        profiles = {t: task_profile(params, t, encoder, tokenizer) for t in tasks}
    updates = {u.name: u for u in load_updates(encoder, {t: paths.adapter_dir(t) for t in tasks})} if tasks else {}
    results = {}
    for pair in pairs:
        a, b = split_combination(pair)
        measures = {**pair_measures(profiles[a], profiles[b]), **update_similarity(updates[a], updates[b])}
        results[pair] = {name: measures[name] for name in SIMILARITY_MEASURES}
    return results


def write_similarity(params: Params) -> Path:
    """The embeddings run in `evaluate.precision` (bf16 on CPUs with bf16 units under `auto`), recorded in the file."""
    check_writable(paths.SIMILARITY)
    precision = resolve(params.evaluate.precision)
    settings = {"similarity": params.similarity.model_dump(), "pairs": scored_pairs(params)}
    with stage_run(params.tracking, "similarity", {**settings, "precision": precision.record()}) as run:
        tasks = dict.fromkeys(t for pair in scored_pairs(params) for t in split_combination(pair))
        run.log_datasets(split for task in tasks for split in prepared_splits(task, ("train",)))
        pairs = measure_pairs(params, precision)
        record = {"max_texts": params.similarity.max_texts, "precision": precision.record(), "pairs": pairs}
        write_json(paths.SIMILARITY, record)
        run.log_metrics(
            {
                metric_key("similarity", name, "pair", pair): value
                for pair, m in pairs.items()
                for name, value in m.items()
            }
        )
        run.log_artifacts(paths.SIMILARITY)
    return paths.SIMILARITY


def run(params: Params) -> Path:
    """`loramerge similarity`."""
    return write_similarity(params)
