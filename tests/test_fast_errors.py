"""Config mistakes are reported before torch, Lightning and wandb are imported (vae_lightning/precheck.py), and a
mistake found later still leaves no tracker run behind. The seconds this saves: benchmarks/error_latency.py."""

import json
import os
import subprocess
from typing import get_args

import pytest

from conftest import PYTHON, ROOT, compose_run

#: Every bad override of tests/test_train.py, with what vae_lightning.precheck says of it: the message the run
#: reports (the same words), or None where the mistake is a part's own (its constructor names it once the
#: part is built, after the imports) or the machine's (the devices it has).
BAD_OVERRIDES = {
    "model.latent_dim=0": "model.latent_dim=0 must be an integer >= 1.",
    "model.latent_dim=abc": "model.latent_dim='abc' must be an integer.",
    "data.batch_size=0": "data.batch_size=0 must be an integer >= 1.",
    "data.num_workers=-1": "data.num_workers=-1 must be an integer >= 0.",
    "data.binarize=otsu": "data.binarize='otsu' is not known",
    "trainer.strategy=ddp": "trainer.strategy='ddp' needs several devices",
    "trainer.precision=8-bit": "trainer: Precision '8-bit' is invalid. Allowed precision values",
    "trainer.max_epochs=-5": "trainer: `max_epochs` must be a non-negative integer or -1",
    "trainer.gradient_clip_val=-1": "trainer.gradient_clip_val=-1 must be a number >= 0",
    "ckpt_path=/nonexistent/last.ckpt": "ckpt_path=/nonexistent/last.ckpt does not exist",
    "eval.nll_chunk_size=-5": "eval.nll_chunk_size=-5 must be an integer >= 1",
    "data=image_folder": "data.path must be set (the config leaves it to you): add data.path=/data/my_images",
    "+model.lr=0.01": "model.lr has moved: write model.optimizer.lr=0.01",
    "matmul_precision=fastest": "matmul_precision='fastest' but it must be one of highest, high, medium",
    "++trainer.profiler=fancy": "trainer.profiler='fancy' must be one of ['simple', 'advanced', 'pytorch', 'xla']",
    "+trainer.accumulate_grad_batches=0": "trainer.accumulate_grad_batches=0 must be an integer >= 1.",
    # The parts' own rules and the machine's devices (some of them): after the imports, when the parts are built.
    "objective.beta=-1": None,
    "objective.kl_schedule=linear": None,
    "model.optimizer.lr=-1": None,
    "model/likelihood=gaussian model.likelihood.sigma=-1": None,
    "model.encoder._target_=vae_lightning.nets.RNNEncoder": None,
    "objective.free_bits_group_size=5": None,
    "model=conv +model.decoder.depth=3": None,
    "trainer.accelerator=gpu trainer.devices=64": None,
}

# Each checks one thing: `python -c` in a process where importing torch, Lightning or wandb raises.
_BLOCKED = ("torch", "lightning", "wandb")


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory) -> dict[str, str]:
    """An environment in which `import torch` (lightning, wandb) raises ImportError naming this test."""
    blocker = tmp_path_factory.mktemp("blocked")
    for name in _BLOCKED:
        (blocker / name).mkdir()
        (blocker / name / "__init__.py").write_text(
            f"raise ImportError('{name} was imported before the config was checked (tests/test_fast_errors.py)')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "HYDRA_FULL_ERROR"}
    env.update(PYTHONPATH=os.pathsep.join([str(blocker), str(ROOT)]), HOME=str(blocker), WANDB_SILENT="true")
    return env


_CHECK_ALL = """
import json, sys
from hydra import compose, initialize_config_dir
from vae_lightning.errors import VAEUserError
from vae_lightning.precheck import check_overrides, check_train_config, debug_last

said = {}
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    for override in json.loads(sys.argv[2]):
        args = override.split()
        try:
            check_overrides(args)
            cfg = compose("train", overrides=debug_last(["logger=none", *args, "paths.data_dir=/nonexistent",
                                                         "paths.output_dir=/nonexistent"]))
            check_train_config(cfg)
            said[override] = None
        except VAEUserError as e:
            said[override] = str(e)
print(json.dumps({"said": said, "imported": sorted(m for m in ("torch", "lightning", "wandb") if m in sys.modules)}))
"""


def test_precheck_says_what_the_run_would_without_importing_torch(no_torch_env):
    """Each bad override's message comes out of vae_lightning.precheck, in a process that cannot import torch,
    Lightning or wandb: the same words the run says (tests/test_train.py), and nothing for the parts' mistakes,
    which their constructors name."""
    result = subprocess.run([PYTHON, "-c", _CHECK_ALL, str(ROOT / "conf"), json.dumps(list(BAD_OVERRIDES))],
                            env=no_torch_env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["imported"] == []
    for override, expected in BAD_OVERRIDES.items():
        said = out["said"][override]
        if expected is None:
            assert said is None, f"{override}: precheck said {said!r}, but this is the part's to say"
        else:
            assert said is not None and expected in said, f"{override}: {said!r}"


@pytest.mark.parametrize("script, args, message", [
    ("train.py", ["data.batch_size=0", "logger=wandb", "logger.wandb.mode=offline"],
     "error: data.batch_size=0 must be an integer >= 1."),
    ("eval.py", [], "error: ckpt_path is not set"),
])
def test_a_bad_config_fails_before_torch_is_imported(script, args, message, no_torch_env, tmp_path):
    """The entry points compose, check, and only then import: with torch unimportable, the error is the
    config's, one line and exit 2 (it would be the ImportError if anything imported torch first)."""
    result = subprocess.run([PYTHON, str(ROOT / script), *args, f"hydra.run.dir={tmp_path / 'run'}"],
                            env=no_torch_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "was imported before" not in result.stderr
    assert not (tmp_path / "run" / "wandb").exists() and not (tmp_path / "run" / "csv").exists()


def test_precision_names_are_lightnings():
    """precheck's copy of Lightning's precision values (checked without importing Lightning) is Lightning's."""
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    from vae_lightning.precheck import PRECISIONS

    lightnings = [value for literal in get_args(_PRECISION_INPUT) for value in get_args(literal)]
    assert sorted(map(str, PRECISIONS)) == sorted(map(str, lightnings))


@pytest.mark.parametrize("override", [
    "data.batch_size=0",  # vae_lightning.precheck
    "objective.beta=-1",  # a part's constructor
    "trainer.limit_train_batches=-1",  # Lightning's Trainer
])
def test_a_failed_check_leaves_no_tracker_run_behind(override, fake_mnist, tmp_path, monkeypatch):
    """Whatever finds the mistake (the precheck, a part, Lightning building the Trainer), no wandb run and no
    CSV version directory is made: the trackers start after everything that checks the config."""
    from vae_lightning.errors import VAEUserError
    from vae_lightning.run import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = compose_run("logger=wandb", override, f"paths.data_dir={fake_mnist}", f"paths.output_dir={tmp_path}",
                      "data.val_size=100")
    with pytest.raises(VAEUserError):
        train(cfg)
    assert not (tmp_path / "wandb").exists() and not list(tmp_path.glob("csv/version_*"))
