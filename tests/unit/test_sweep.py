"""The emotion study's sweep: every grid point becomes one queued DVC experiment that DVC accepts."""

from __future__ import annotations

from tests.sandbox import make_sandbox, run, tiny_params


def test_every_grid_point_is_queued_even_overrides_of_keys_params_yaml_omits(tmp_path):
    """baselines.full.weight_decay is not in params.yaml: a plain `-S key=value` is refused by DVC there."""
    params = tiny_params()
    params["baselines"]["full"].pop("weight_decay", None)
    params["sweep"].update(
        lora_ranks=[2],
        lora_learning_rates=[0.001],
        lora_targets=["attention"],
        full_learning_rates=[5e-5],
        full_weight_decays=[0.001],
    )
    sandbox = make_sandbox(tmp_path / "repo", params)
    queued = run(["loramerge", "sweep", "queue"], sandbox, check=False)
    assert queued.returncode == 0 and "queued 2 experiments" in queued.stdout, queued.stderr[-3000:]
    status = run(["dvc", "queue", "status"], sandbox).stdout
    assert status.count("Queued") == 2, status
