"""Hydra multirun sweeps: one directory per job, a summary table and a rate-distortion plot; trainer presets."""

import csv
import struct

import pytest

from conftest import ROOT
from test_train import _compose, run_train


def test_beta_sweep_writes_a_summary_and_a_rate_distortion_plot(fake_mnist, train_env, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(["-m", "logger=none", f"data.data_dir={fake_mnist}", "data.val_size=100", "trainer.max_epochs=1",
                        "objective.beta=0.5,1,4", f"hydra.sweep.dir={sweep}"], train_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["swept"] for r in rows] == ["objective.beta=0.5", "objective.beta=1", "objective.beta=4"]
    for r in rows:  # the final metrics of each job, consistent with each other
        assert r["status"] == "done"
        assert float(r["test/elbo"]) == pytest.approx(-(float(r["test/recon"]) + float(r["test/kl"])), rel=1e-5)
    # A stronger weight on the KL term buys a smaller KL.
    assert float(rows[2]["test/kl"]) < float(rows[0]["test/kl"])
    png = (sweep / "rate_distortion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (720, 540)
    assert "Sweep summary" in result.stdout and "| objective.beta=4 | done |" in result.stdout


@pytest.mark.parametrize("preset, expected", [
    ("cpu", {"accelerator": "cpu", "devices": 1, "strategy": "auto"}),
    ("gpu", {"accelerator": "gpu", "devices": 1}),
    ("ddp", {"accelerator": "gpu", "devices": -1, "strategy": "ddp"}),
    ("ddp_cpu", {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}),
    ("fsdp", {"strategy": "fsdp", "devices": -1}),
    ("multinode", {"strategy": "ddp", "num_nodes": 2}),
    ("bf16", {"accelerator": "gpu", "precision": "bf16-mixed"}),
])
def test_trainer_presets_are_one_word(preset, expected):
    trainer = _compose(f"trainer={preset}").trainer
    assert {k: trainer[k] for k in expected} == expected
    assert trainer._target_ == "lightning.pytorch.Trainer" and trainer.plugins  # the defaults are inherited
