"""Resume through train.py gives what only a resume gives: it does not train the epochs already done,
it starts from the checkpoint's optimiser state, learning-rate position, beta and data order, and it
ends with the weights of the run that was never interrupted."""

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import compose_run
from vae_lightning.run import train

STEPS_PER_EPOCH = 10  # 500 training images of the made data, batches of 50
#: objective=factor_vae: a discriminator with an optimiser of its own, two optimiser steps per batch
#: (trainer.global_step counts both; the batches seen are half of it).
FACTOR_VAE = ("objective=factor_vae", "objective.hidden_dims=[32,32]")


def _run(tmp_path: Path, run_dir: Path, fake_mnist, *overrides: str) -> dict:
    cfg = compose_run(
        "logger=csv", f"paths.data_dir={fake_mnist}", f"paths.output_dir={run_dir}", "seed=3",
        "data.val_size=100", "data.batch_size=50", "model.latent_dim=3", "model.encoder.hidden_dims=[32]",
        "objective.num_samples=2", "objective.kl_schedule=linear", "objective.warmup_steps=25",
        "trainer.log_every_n_steps=1", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
        "callbacks.image_logger.every_n_epochs=0", "+trainer.enable_progress_bar=false",
        "+callbacks.record._target_=helpers.RecordTraining", f"+callbacks.record.prefix={run_dir / 'record'}",
        *overrides)
    return train(cfg)


def _batches(run_dir: Path) -> list:
    return [json.loads(line) for line in (run_dir / "record.batches.jsonl").read_text().splitlines()]


def _train_steps(run_dir: Path, version: int) -> list[int]:
    with open(run_dir / "csv" / f"version_{version}" / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.parametrize("schedule, objective", [("cosine", "elbo"), ("burda", "elbo"), ("cosine", "factor_vae")])
def test_a_run_resumed_at_an_epoch_boundary_continues_exactly(schedule, objective, fake_mnist, tmp_path):
    common = [f"model/lr_scheduler={schedule}", "model.optimizer.lr=0.01", "trainer.max_epochs=3",
              *(FACTOR_VAE if objective == "factor_vae" else ())]
    per = 2 if objective == "factor_vae" else 1  # optimiser steps per batch
    whole = _run(tmp_path, tmp_path / "whole", fake_mnist, *common)
    part = tmp_path / "part"  # stopped after 2 of its 3 epochs, then run again in the same directory
    _run(tmp_path, part, fake_mnist, *common, "+callbacks.stop._target_=helpers.StopAfterEpochs",
         "+callbacks.stop.epochs=2", "test=false")
    first_batches = _batches(part)
    (part / "record.batches.jsonl").unlink()
    checkpoint = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2 * STEPS_PER_EPOCH * per
    resumed = _run(tmp_path, part, fake_mnist, *common)  # the same run directory: ckpt_path=auto resumes

    # It trains epoch 3 only: its batches and its logged steps come after the checkpoint's.
    batches = _batches(part)
    assert [b[0] for b in batches] == [2] * STEPS_PER_EPOCH and batches[0][3] == 2 * STEPS_PER_EPOCH
    assert min(_train_steps(part, version=1)) == 2 * STEPS_PER_EPOCH and resumed["steps"] == whole["steps"] == 30
    # ... in the order of the uninterrupted run's epoch 3 (and epochs 1-2 were those of the first part).
    assert batches == _batches(tmp_path / "whole")[2 * STEPS_PER_EPOCH:]
    assert first_batches == _batches(tmp_path / "whole")[: 2 * STEPS_PER_EPOCH]
    # It starts from the checkpoint: Adam's moments, the learning rate and the scheduler's position, beta.
    start = json.loads((part / "record.start.json").read_text())
    saved_state = checkpoint["optimizer_states"][0]["state"]
    restored = torch.load(part / "record.start.pt", weights_only=True)
    assert saved_state.keys() == restored.keys() and all(
        torch.equal(saved_state[i][k], restored[i][k]) for i in saved_state for k in ("exp_avg", "exp_avg_sq"))
    assert any(saved_state[i]["exp_avg"].abs().sum() > 0 for i in saved_state)  # not a fresh optimiser's zeros
    if objective == "factor_vae":  # and the discriminator's optimiser from its own saved state
        saved_own, restored_own = checkpoint["optimizer_states"][1]["state"], torch.load(
            part / "record.start.own.pt", weights_only=True)
        assert saved_own.keys() == restored_own.keys() and len(saved_own) == 6  # 3 linear layers' weights, biases
        assert all(torch.equal(saved_own[i][k], restored_own[i][k])
                   for i in saved_own for k in ("exp_avg", "exp_avg_sq"))
        assert any(key.startswith("objective.discriminator.") for key in checkpoint["state_dict"])
    scheduler_state = checkpoint["lr_schedulers"][0]
    assert start["scheduler_last_epoch"] == scheduler_state["last_epoch"]
    assert start["lr"] == pytest.approx(scheduler_state["_last_lr"][0], rel=1e-12)
    expected_lr = {"cosine": 0.01 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 20 / 30)).item()),
                   "burda": 0.01 * 10 ** (-1 / 7)}[schedule]  # step 20 of 30; epoch 2 is Burda's stage 1
    assert start["lr"] == pytest.approx(expected_lr, rel=1e-6) and start["lr"] < 0.01
    beta = 10.0 if objective == "factor_vae" else 1.0  # the objective's beta, warmed up over 25 batches
    assert start["step"] == 20 and start["beta"] == pytest.approx(beta * 20 / 25)
    # And it ends where the uninterrupted run ends, weight for weight (deterministic CPU, the same seed:
    # each batch's noise comes from its own seed, see callbacks.SeedEveryStep).
    final = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in final)
    for key in ("test/elbo", "test/recon", "test/kl", "val/elbo_best"):
        assert resumed[key] == whole[key], key


@pytest.mark.parametrize("objective", ["elbo", "factor_vae"])
def test_a_run_resumed_after_a_validation_in_the_middle_of_an_epoch_continues_exactly(objective, fake_mnist, tmp_path):
    """val_check_interval=0.5: a validation after batch 5 of every epoch, and last.ckpt saved there; a run
    that stops at that point (a hard kill after the save) and resumes ends with the uninterrupted weights.
    With factor_vae the checkpoint's global_step is twice the batches: the resume finds its place in the
    epoch (the data skip, the per-batch seeds) from the batches seen, not from global_step."""
    common = ["trainer.max_epochs=2", "+trainer.val_check_interval=0.5", "model/lr_scheduler=cosine",
              *(FACTOR_VAE if objective == "factor_vae" else ())]
    per = 2 if objective == "factor_vae" else 1
    _run(tmp_path, tmp_path / "whole", fake_mnist, *common)
    part = tmp_path / "part"
    _run(tmp_path, part, fake_mnist, *common, "+callbacks.stop._target_=helpers.StopAfterSteps",
         "+callbacks.stop.steps=15", "test=false")
    assert torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 15 * per
    first_batches = _batches(part)
    (part / "record.batches.jsonl").unlink()
    _run(tmp_path, part, fake_mnist, *common)
    # The resumed part trains batches 5..9 of epoch 1, as the uninterrupted run did.
    assert first_batches + _batches(part) == _batches(tmp_path / "whole")
    final = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in reference)


def test_every_batch_validation_and_test_has_a_seed_of_its_own():
    from vae_lightning.callbacks import SeedEveryStep

    seeds = SeedEveryStep(seed=42)
    batches = {seeds.seed_for(rank, epoch, batch) for rank in range(4) for epoch in range(50) for batch in range(100)}
    evaluations = {seeds.seed_for(rank, epoch, where, step) for rank in range(4) for epoch in range(50)
                   for where in (SeedEveryStep.VALIDATION, SeedEveryStep.TEST) for step in (epoch * 100, epoch * 100 + 50)}
    assert len(batches) == 4 * 50 * 100 and len(evaluations) == 4 * 50 * 2 * 2 and not batches & evaluations
    assert SeedEveryStep(seed=43).seed_for(0, 0, 0) != seeds.seed_for(0, 0, 0)  # and another run's differ
