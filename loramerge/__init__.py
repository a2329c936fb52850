"""loramerge: train LoRA adapters per task, merge them, measure what merging costs."""
