"""The README.md model card of an export folder, in Hugging Face's model-card form (YAML front matter).

Every number in it is read from the pipeline's own metrics files or measured by the export
stage; nothing is typed in by hand, so the card always describes the weights beside it.
"""

from __future__ import annotations

import json

from loramerge.paths import combination_stage, dvc_target
from loramerge.records import BaselineMetrics, MergedMetrics, SingleMetrics

CARD_TEMPLATE = """---
{front_matter}
---

# loramerge-{combo}

One encoder, {k} classification heads: the LoRA adapters of {member_list} merged with **{method}**
into a single update folded into `{base_model}`, so one encoder pass serves all {k} tasks.

## Intended use

{use} classified for {member_list} at once, on CPU or GPU; research on adapter merging.
Each head predicts only the labels of its task (see `heads/<task>/labels.json`).

```python
from loramerge.multitask import MultiTaskModel
model = MultiTaskModel.load("{folder}")
model.predict_frame([{example}])   # one label and one probability column per task
```

or `loramerge predict --model {folder} {predict_option}`, or through MLflow:
`mlflow models serve -m "models:/loramerge-{combo}@champion" --env-manager local --host 127.0.0.1`
(input column `{input}`{served}).
{adapter_note}
## Members

{members_table}

## Accuracy

Validation (the split the merge method and its hyper-parameters were chosen on, {val_examples}):

{validation_table}

Test (never seen while merging), the merged model beside each task's single adapter and the two
baselines (head only on the frozen encoder; full fine-tuning):

{test_table}

## Inference cost

Measured by the evaluate stage on {examples} test inputs: the merged model classified them for all
{k} tasks in {merged_s:.2f} s (one encoder pass per batch); the {k} single adapters took {unmerged_s:.2f} s
({k} passes), a {speedup:.2f}x speed-up.

## Compressed variants

{compression_table}

## How it was made

`loramerge` pipeline (`dvc repro {stage}`), git commit `{git_commit}`. Method chosen among
{candidates} by mean normalized validation accuracy (ties: the first in `merge.methods`);
hyper-parameters `{hyper}`. The merged update is folded into the encoder's weights (`model.safetensors`);
`export.json` records members, method, adapter and head hashes.

## Limitations

- Merging costs accuracy relative to the single adapters (see the tables); check the task you care about.
- Trained on small subsamples of each dataset ({train_note}); labels and domains are those datasets'.
- {input_limits}
"""

USE = {
    "text": {
        "use": "Short English texts",
        "example": '"some text"',
        "predict_option": '--text "some text"',
        "served": "",
        "pipeline_tag": "text-classification",
        "unit": "texts",
        "preprocessing": "tokenising",
        "input_limits": "Texts are truncated to {max_length} tokens. English only, as the base encoder.",
    },
    "image": {
        "use": "Images",
        "example": '"photo.jpg"',
        "predict_option": "--image photo.jpg",
        "served": ": each image's file bytes, base64-encoded",
        "pipeline_tag": "image-classification",
        "unit": "images",
        "preprocessing": "decoding and resizing",
        "input_limits": "Images are resized and normalised by the base encoder's image processor, as it was "
        "pretrained.",
    },
}
"""What the card says of a model that reads text and of one that reads images (export.json's `input`)."""


def _front_matter(manifest: dict) -> str:
    tags = ["loramerge", "lora", "model-merging", "multi-task", manifest["method"], *manifest["members"]]
    return "\n".join(
        [
            f"base_model: {manifest['base_model']}",
            "library_name: transformers",
            f"pipeline_tag: {USE[manifest.get('input', 'text')]['pipeline_tag']}",
            "tags:",
            *(f"- {t}" for t in tags),
        ]
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def compression_table(compression: dict, unit: str = "texts", preprocessing: str = "tokenising") -> str:
    """fp32 / int8 / bf16: size on disk, per-task test accuracy, batch-1 latency and batch-64 throughput."""
    precisions = compression["precisions"]
    tasks = list(next(iter(precisions.values()))["accuracy"])
    rows = [
        [
            name,
            f"{m['size_bytes'] / 2**20:.1f} MiB",
            *(_pct(m["accuracy"][t]) for t in tasks),
            f"{m['latency_b1_p50_ms']:.1f}",
            f"{m['latency_b1_p95_ms']:.1f}",
            f"{m['throughput_b64_per_s']:.0f}",
        ]
        for name, m in precisions.items()
    ]
    table = _table(
        ["precision", "size", *(f"{t} acc" for t in tasks), "b1 p50 ms", "b1 p95 ms", f"b64 {unit}/s"], rows
    )
    examples = ", ".join(f"{n} {t}" for t, n in compression["examples"].items())
    bf16 = (
        ""
        if compression["bf16_native"]
        else " bf16 is left out: this CPU has no native bf16 units (avx512_bf16/amx_bf16)."
    )
    return (
        f"{table}\n\nAccuracy on test examples ({examples}); "
        f"latency over {compression['latency_calls']} single {unit}, "
        f"throughput best of {compression['throughput_repeats']} batches of 64, {preprocessing} included, "
        f"{compression['torch_threads']} CPU threads; sizes are the weights saved with `torch.save`.{bf16}"
    )


def model_card(
    manifest: dict,
    merged: MergedMetrics,
    singles: dict[str, SingleMetrics],
    baselines: dict[str, BaselineMetrics],
    compression: dict,
    folder: str,
) -> str:
    """The card's text from the export manifest, metrics/merged/<combo>.json, the single and baseline metrics."""
    members, method = manifest["members"], manifest["method"]
    use = USE[manifest.get("input", "text")]
    validation = manifest["validation"]
    test = merged.methods[method].tasks
    inference = merged.inference
    member_rows = [
        [t, ", ".join(manifest["labels"][t]), manifest["member_hashes"][t]["adapter_sha256"][:12]] for t in members
    ]
    validation_rows = [
        [t, _pct(validation["merged_scores"][t]), _pct(validation["single_scores"][t])] for t in members
    ]
    test_rows = [
        [
            t,
            _pct(test[t].score),
            _pct(singles[t].score),
            _pct(baselines[t].head_only.score),
            _pct(baselines[t].full.score),
        ]
        for t in members
    ]
    adapter_note = (
        "\nThe merged update is exactly low-rank, so `adapter/` also holds it as a PEFT adapter"
        " over the base encoder:\n"
        f'`PeftModel.from_pretrained(AutoModel.from_pretrained("{manifest["base_model"]}"), "{folder}/adapter")`.\n'
        if manifest["format"] == "peft_adapter"
        else ""
    )
    return CARD_TEMPLATE.format(
        front_matter=_front_matter(manifest),
        combo=manifest["combination"],
        stage=dvc_target(combination_stage("export", manifest["combination"])),
        k=len(members),
        member_list=", ".join(members),
        method=method,
        base_model=manifest["base_model"],
        folder=folder,
        adapter_note=adapter_note,
        members_table=_table(["task", "labels", "adapter sha256"], member_rows),
        val_examples=", ".join(f"{n} {t}" for t, n in validation["examples"].items()) + " examples",
        validation_table=_table(["task", "merged", "single adapter"], validation_rows),
        test_table=_table(["task", "merged", "single adapter", "head only", "full fine-tuning"], test_rows),
        examples=inference.examples,
        merged_s=inference.merged_s,
        unmerged_s=inference.unmerged_s,
        speedup=inference.speedup,
        compression_table=compression_table(compression, use["unit"], use["preprocessing"]),
        git_commit=manifest["git_commit"],
        candidates=", ".join(manifest["candidates"]),
        hyper=json.dumps(manifest["params"]),
        train_note="see params.yaml `tasks.<task>.data`",
        input=manifest.get("input", "text"),
        use=use["use"],
        example=use["example"],
        predict_option=use["predict_option"],
        served=use["served"],
        input_limits=use["input_limits"].format(max_length=manifest["max_length"]),
    )
