"""LoRA training throughput: loramerge's Lightning loop versus Hugging Face `Trainer`, on one recipe.

Equal work: both sides train the same model (the train stage's encoder with its LoRA targets, mean pooling and
classification head, built from the same seed) with the same recipe (AdamW, the LoRA learning rate on the adapter,
`head_learning_rate` on the head, weight decay, linear warm-up then linear decay, batch size, epochs, float32) on the
same prepared examples. HF's side gets the recipe through its own API: an optimizer of two parameter groups passed to
`Trainer(optimizers=...)`, whose scheduler `Trainer` builds from `lr_scheduler_type="linear"` and `warmup_steps`.
What differs is the loop alone: Lightning with loramerge's length-grouped sampler and `FastDropout` against
`Trainer` with `DataCollatorWithPadding`, once with its random batches and once with `train_sampling_strategy="group_by_length"` (HF's
own length grouping). A throughput ratio is printed only where both sides' validation accuracy is equal within noise
(exact McNemar test on the same validation examples, p >= 0.05). Also prints the achieved GFLOP/s (2·N forward +
4·N backward through the encoder layers) against this CPU's measured float32 matmul peak.

Run: `python -m benchmarks.bench_training [--task emotion] [--examples 1500] [--epochs 3]` after
`dvc repro prepare@<task>` (it reads data/prepared/<task>).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import numpy as np
import pandas as pd
import torch

from benchmarks.common import matmul_peak_gflops, ratio
from loramerge import paths
from loramerge.backbone import load_tokenizer
from loramerge.config import load_params
from loramerge.data import load_split
from loramerge.model import ClassificationHead, Classifier
from loramerge.records import TrainMetrics
from loramerge.report.uncertainty import mcnemar_exact
from loramerge.stages.train import build_encoder
from loramerge.tasktypes import TASK_TYPES
from loramerge.tokens import token_loss
from loramerge.training import ClassifierModule, TaskDataModule

SIGNIFICANCE = 0.05


def encoder_layer_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".layer." in n)


def seeded_classifier(params, config, labels: int) -> Classifier:
    """The train stage's LoRA classifier, its head drawn from the seed: both sides start from the same weights."""
    L.seed_everything(config.seed)
    encoder = build_encoder(params, "lora")
    head = ClassificationHead(encoder.config.hidden_size, labels, config.head_dropout)
    return Classifier(encoder, head, params.backbone.pooling).train()


def recipe_optimizer(classifier: Classifier, config) -> torch.optim.AdamW:
    """The stage's optimizer: the adapter at `learning_rate`, the head at `head_learning_rate`, one weight decay."""
    encoder = [p for p in classifier.encoder.parameters() if p.requires_grad]
    groups = [
        {"params": encoder, "lr": config.learning_rate},
        {"params": list(classifier.head.parameters()), "lr": config.head_learning_rate},
    ]
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def result(side: str, seconds: float, samples: int, tokens: int, correct: np.ndarray, model) -> dict:
    return {
        "side": side,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "val_accuracy": float(correct.mean()),
        "correct": correct,
        "layer_params": encoder_layer_params(model),
    }


def ours(params, task: str, examples: int, epochs: int) -> dict:
    config = params.task_train(task).model_copy(update={"max_epochs": epochs, "val_check_interval": 10**6})
    tokenizer = load_tokenizer(params.backbone)
    labels = sorted(load_split(task, "train")["label"].unique())
    classifier = seeded_classifier(params, config, len(labels))
    data = TaskDataModule(
        task,
        TASK_TYPES["sequence_classification"],
        labels,
        tokenizer,
        params.backbone.max_length,
        config.batch_size,
        config.seed,
    )
    data.setup()
    data.splits["train"].input_ids = data.splits["train"].input_ids[:examples]
    data.splits["train"].labels = data.splits["train"].labels[:examples]
    steps = -(-examples // config.batch_size) * epochs
    module = ClassifierModule(classifier, config, steps, data)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        precision="32",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=True,
    )  # as the stage trains
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    seconds = time.perf_counter() - started
    classifier.eval()
    validation = data.splits["validation"]
    correct = np.zeros(len(validation.labels), dtype=bool)
    with torch.inference_mode():
        for batch in validation.sorted_batches(64):
            found = classifier(batch["input_ids"], batch["attention_mask"]).argmax(-1)
            correct[batch["index"]] = (found == batch["labels"]).numpy()
    tokens = sum(len(ids) for ids in data.splits["train"].input_ids) * epochs
    return result("loramerge (Lightning)", seconds, examples * epochs, tokens, correct, classifier.encoder)


class TrainerModel(torch.nn.Module):
    """The classifier in the form `Trainer` trains: the batch's columns in, the loss (the stage's) and logits out."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> dict:
        logits = self.classifier(input_ids, attention_mask)
        return {"loss": token_loss(logits, labels), "logits": logits}


def huggingface(params, task: str, examples: int, epochs: int, group_by_length: bool) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    config = params.task_train(task)
    tokenizer = load_tokenizer(params.backbone)
    train, validation = load_split(task, "train").head(examples), load_split(task, "validation")
    labels = sorted(load_split(task, "train")["label"].unique())

    def encode(frame: pd.DataFrame) -> Dataset:
        encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=params.backbone.max_length)
        return Dataset.from_dict({**encoded, "labels": frame["label_id"].tolist()})

    classifier = seeded_classifier(params, config, len(labels))
    steps = -(-examples // config.batch_size) * epochs
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=64,
            num_train_epochs=epochs,
            lr_scheduler_type="linear",
            warmup_steps=int(config.warmup_ratio * steps),
            train_sampling_strategy="group_by_length" if group_by_length else "random",
            seed=config.seed,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=TrainerModel(classifier),
            args=arguments,
            train_dataset=encode(train),
            data_collator=DataCollatorWithPadding(tokenizer),
            optimizers=(recipe_optimizer(classifier, config), None),
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        predictions = trainer.predict(encode(validation)).predictions.argmax(-1)
    tokens = sum(len(ids) for ids in encode(train)["input_ids"]) * epochs
    correct = predictions == validation["label_id"].to_numpy()
    side = "HF Trainer, group_by_length" if group_by_length else "HF Trainer, random batches"
    return result(side, seconds, examples * epochs, tokens, correct, classifier.encoder)


def verdict(first: dict, second: dict) -> str:
    """The throughput ratio of two sides, stated only when their validation accuracy is equal within noise."""
    p = mcnemar_exact(first["correct"], second["correct"])
    accuracies = (
        f"validation accuracy {first['val_accuracy']:.3f} vs {second['val_accuracy']:.3f}, McNemar p = {p:.2f}"
    )
    if p < SIGNIFICANCE:
        return f"{first['side']} vs {second['side']}: {accuracies}: not equal work, no ratio stated."
    speed = ratio(first["samples_per_s"], second["samples_per_s"])
    return f"{first['side']} / {second['side']}: **{speed}** the samples/s at equal accuracy ({accuracies})."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="emotion")
    parser.add_argument("--examples", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    params = load_params("params.yaml")
    if params.train.num_threads:
        torch.set_num_threads(params.train.num_threads)
    rows = [
        ours(params, args.task, args.examples, args.epochs),
        huggingface(params, args.task, args.examples, args.epochs, group_by_length=False),
        huggingface(params, args.task, args.examples, args.epochs, group_by_length=True),
    ]
    peak = matmul_peak_gflops()
    for row in rows:
        row["gflops"] = 6 * row["layer_params"] * row["tokens_per_s"] / 1e9
        row["share_of_matmul_peak"] = row["gflops"] / peak
    table = pd.DataFrame(rows).drop(columns=["layer_params", "correct"])
    config = params.task_train(args.task)
    print("## LoRA training throughput: loramerge vs Hugging Face Trainer, same model and recipe\n")
    print(
        f"`{params.backbone.name}`, LoRA r={params.lora.rank} on `{params.lora.targets}`, mean pooling and the stage's "
        f"head; task `{args.task}`: {args.examples} training examples × {args.epochs} epoch(s), batch "
        f"{config.batch_size}, max length {params.backbone.max_length}, AdamW lr {config.learning_rate} (head "
        f"{config.head_learning_rate}), weight decay {config.weight_decay}, linear schedule with "
        f"{config.warmup_ratio:.0%} warm-up, float32, seed {config.seed}; validation accuracy on the prepared "
        f"validation split. Matmul peak of this CPU: {peak:.1f} GFLOP/s (float32, 1024², best of 3). GFLOP/s = 6 × "
        "encoder-layer parameters × real (unpadded) tokens per second.\n"
    )
    print(table.to_markdown(index=False, floatfmt=".3f"))
    print()
    for other in rows[1:]:
        print(f"- {verdict(rows[0], other)}")
    recorded = paths.train_metrics(args.task, "lora")
    if recorded.exists():
        stage = TrainMetrics.read(recorded)
        print(
            f"\nFor comparison, the `train@{args.task}` stage itself (all {stage.global_steps} steps, plus validation every "
            f"{config.val_check_interval} steps, checkpoints and per-step MLflow logging) recorded "
            f"{stage.train_samples_per_s:.1f} samples/s in its last run ({recorded})."
        )


if __name__ == "__main__":
    main()
