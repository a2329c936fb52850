"""LoRA training throughput: loramerge's Lightning loop versus Hugging Face `Trainer` + `peft`.

Both sides train the same backbone with LoRA r=8 on query/value, on the same prepared
examples, batch size, sequence limit, epochs and seed, in one process, one after the
other; the script prints samples per second for each, the ratio, and each side's final
validation accuracy (throughput only counts if accuracy holds). HF's side uses its usual
defaults: `AutoModelForSequenceClassification` ([CLS] pooler head), random batches padded
by `DataCollatorWithPadding`. Also prints the achieved GFLOP/s (6 × trainable-path
parameters × tokens/s is the usual estimate; here 2·N forward + 4·N backward through the
encoder layers) against this CPU's measured float32 matmul peak.

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
from loramerge.backbone import load_tokenizer, resolve_backbone
from loramerge.config import load_params
from loramerge.data import load_split
from loramerge.model import ClassificationHead, Classifier
from loramerge.records import TrainMetrics
from loramerge.stages.train import build_encoder
from loramerge.tasktypes import TASK_TYPES
from loramerge.training import ClassifierModule, TaskDataModule


def encoder_layer_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".layer." in n)


def ours(params, task: str, examples: int, epochs: int) -> dict:
    config = params.task_train(task).model_copy(update={"max_epochs": epochs, "val_check_interval": 10**6})
    L.seed_everything(config.seed)
    tokenizer = load_tokenizer(params.backbone)
    encoder = build_encoder(params, "lora")
    labels = sorted(load_split(task, "train")["label"].unique())
    classifier = Classifier(
        encoder,
        ClassificationHead(encoder.config.hidden_size, len(labels), config.head_dropout),
        params.backbone.pooling,
    ).train()
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
    correct = total = 0
    with torch.inference_mode():
        for batch in data.splits["validation"].sorted_batches(64):
            correct += int(
                (classifier(batch["input_ids"], batch["attention_mask"]).argmax(-1) == batch["labels"]).sum()
            )
            total += len(batch["labels"])
    tokens = sum(len(ids) for ids in data.splits["train"].input_ids) * epochs
    return {
        "side": "loramerge (Lightning)",
        "seconds": seconds,
        "samples_per_s": examples * epochs / seconds,
        "tokens_per_s": tokens / seconds,
        "val_accuracy": correct / total,
        "layer_params": encoder_layer_params(encoder),
    }


def huggingface(params, task: str, examples: int, epochs: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    config = params.task_train(task)
    tokenizer = load_tokenizer(params.backbone)
    train, validation = load_split(task, "train").head(examples), load_split(task, "validation")
    labels = sorted(load_split(task, "train")["label"].unique())

    def encode(frame: pd.DataFrame) -> Dataset:
        encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=params.backbone.max_length)
        return Dataset.from_dict({**encoded, "labels": frame["label_id"].tolist()})

    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_backbone(params.backbone.name), num_labels=len(labels), use_safetensors=True
    )
    model = get_peft_model(
        model,
        LoraConfig(
            task_type="SEQ_CLS",
            r=params.lora.rank,
            lora_alpha=params.lora.alpha,
            lora_dropout=params.lora.dropout,
            target_modules=["query", "value"],
        ),
    )
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=config.batch_size,
            num_train_epochs=epochs,
            learning_rate=config.learning_rate,
            weight_decay=config.weight_decay,
            warmup_steps=int(config.warmup_ratio * -(-examples // config.batch_size) * epochs),
            seed=config.seed,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model, args=arguments, train_dataset=encode(train), data_collator=DataCollatorWithPadding(tokenizer)
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        predictions = trainer.predict(encode(validation)).predictions.argmax(-1)
    tokens = sum(len(ids) for ids in encode(train)["input_ids"]) * epochs
    return {
        "side": "HF Trainer + peft",
        "seconds": seconds,
        "samples_per_s": examples * epochs / seconds,
        "tokens_per_s": tokens / seconds,
        "val_accuracy": float(np.mean(predictions == validation["label_id"].to_numpy())),
        "layer_params": encoder_layer_params(model),
    }


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
        huggingface(params, args.task, args.examples, args.epochs),
    ]
    peak = matmul_peak_gflops()
    for row in rows:
        row["gflops"] = 6 * row["layer_params"] * row["tokens_per_s"] / 1e9
        row["share_of_matmul_peak"] = row["gflops"] / peak
    table = pd.DataFrame(rows).drop(columns=["layer_params"])
    print("## LoRA training throughput: loramerge vs Hugging Face Trainer + peft\n")
    print(
        f"`{params.backbone.name}`, LoRA r={params.lora.rank} on query/value, task `{args.task}`: {args.examples} training examples × "
        f"{args.epochs} epoch(s), batch {params.task_train(args.task).batch_size}, max length {params.backbone.max_length}, seed "
        f"{params.train.seed}; validation accuracy on the prepared validation split. Matmul peak of this CPU: {peak:.1f} GFLOP/s "
        "(float32, 1024², best of 3). GFLOP/s = 6 × encoder-layer parameters × real (unpadded) tokens per second. "
        "Goal: ≥ 1.5× with equal accuracy within noise.\n"
    )
    print(table.to_markdown(index=False, floatfmt=".3f"))
    print(
        f"\nThroughput ratio (loramerge / HF): **{ratio(rows[0]['samples_per_s'], rows[1]['samples_per_s'])}**; "
        f"validation accuracy {rows[0]['val_accuracy']:.3f} vs {rows[1]['val_accuracy']:.3f} "
        f"({len(load_split(args.task, 'validation'))} examples)."
    )
    recorded = paths.train_metrics(args.task, "lora")
    if recorded.exists():
        stage = TrainMetrics.read(recorded)
        print(
            f"\nFor comparison, the `train@{args.task}` stage itself (all {stage.global_steps} steps, plus validation every "
            f"{params.task_train(args.task).val_check_interval} steps, checkpoints and per-step MLflow logging) recorded "
            f"{stage.train_samples_per_s:.1f} samples/s in its last run ({recorded})."
        )


if __name__ == "__main__":
    main()
