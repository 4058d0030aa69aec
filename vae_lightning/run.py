"""Build everything a run needs from the composed config, train, test, report."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .checks import check_config, warn_likelihood_for_data
from .console import lightning_through_root_logger, route_wandb_messages
from .errors import VAEUserError
from .module import VAE
from .sweep import HEADLINE_SCORES
from .steps import batches_seen

log = logging.getLogger(__name__)

# Noise that says nothing about the run: a deprecation inside Lightning's pytree helper
# under recent PyTorch, a hint that does not apply, and an advertisement for another logging service.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# The VAE logs the train terms at least once an epoch whatever the logging interval (module.py).
warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
# Lightning, imported above, prints through handlers of its own, past the console filter (console.py).
lightning_through_root_logger()


def instantiate(cfg: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with our own errors passed through unwrapped.

    Hydra wraps whatever a constructor raises; a VAEUserError already says what
    to fix, so it should reach the user as it is.
    """
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, VAEUserError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a group such as ``callbacks`` (null entries skipped)."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """The config with every interpolation resolved, as plain values; a broken interpolation is one
    error naming its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        where = f" (at {e.full_key})" if getattr(e, "full_key", None) else ""
        raise VAEUserError(f"The config cannot be resolved{where}: {str(e).splitlines()[0]}") from None


def build_trainer(cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The Trainer of the ``trainer`` group. Lightning checks its own settings (precision and strategy
    names, epochs); what it refuses is one error naming the group."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.strategies import ParallelStrategy

    try:
        trainer = hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, VAEUserError):
            raise cause from None
        if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            raise VAEUserError(f"trainer: {str(cause).splitlines()[0]}") from None
        raise
    if isinstance(trainer.strategy, ParallelStrategy) and trainer.world_size == 1:
        raise VAEUserError(f"trainer.strategy={cfg.get('strategy')!r} needs several devices: set trainer.devices=N "
                           f"(N > 1) or trainer.devices=-1, or use trainer.strategy=auto for one device.")
    return trainer


def _instantiate_loggers(group: DictConfig | None, output_dir: Path) -> list[Any]:
    """The logger group; a logger that cannot start (wandb: no network, no disk, init error; an MLflow server
    that does not answer) is replaced by a CSV logger with one warning, so the run goes on and loses nothing.
    A tracker whose package is missing is a VAEUserError that says what to install."""
    from lightning.pytorch.loggers import CSVLogger

    from .trackers import prepare

    loggers, failed = [], False
    for name, entry in (group or {}).items():
        if entry is None or "_target_" not in entry:
            continue
        try:
            logger = instantiate(entry)
            route_wandb_messages(logger)  # its own lines through logging (console.py)
            _ = logger.experiment  # start it now, not halfway through the first step
        except VAEUserError:
            raise
        except Exception as e:
            log.warning(f"logger {name} failed to start ({type(e).__name__}: {e}); logging to CSV in "
                        f"{output_dir / 'csv'} instead.")
            failed = True
            continue
        prepare(logger)
        loggers.append(logger)
    if failed and not any(isinstance(logger, CSVLogger) for logger in loggers):
        loggers.append(CSVLogger(save_dir=output_dir, name="csv"))
    return loggers


def _resume_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``auto``: this run directory's checkpoints/last.ckpt if there is one (a requeued or
    re-run job resumes), else a fresh start; a path: that checkpoint, which must exist."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "auto":
        # last.ckpt (end of an epoch, or SIGTERM), or Lightning's hpc_ckpt_N.ckpt (a SLURM
        # pre-emption with auto-requeue): the newer one. A requeued job finds them only if its
        # run directory is the same: hydra.run.dir=outputs/slurm-$SLURM_JOB_ID (README).
        candidates = [output_dir / "checkpoints" / "last.ckpt", *output_dir.glob("hpc_ckpt_*.ckpt")]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            return None
        newest = max(existing, key=lambda p: p.stat().st_mtime)
        log.info(f"Resuming from {newest}")
        return str(newest)
    if not Path(ckpt_path).is_file():
        raise VAEUserError(f"ckpt_path={ckpt_path} does not exist: give the path of a .ckpt file, or ckpt_path=auto "
                           f"to resume the run directory's checkpoints/last.ckpt when there is one.")
    return ckpt_path


def _compiled(model: L.LightningModule, trainer: L.Trainer) -> L.LightningModule:
    """``torch.compile`` the model's forward pass (Lightning unwraps the result and trains the module)."""
    if trainer.strategy.root_device.type == "cpu" and not (os.environ.get("CXX") or shutil.which("c++")
                                                            or shutil.which("g++") or shutil.which("clang++")):
        raise VAEUserError("compile=true on the CPU needs a C++ compiler (g++ or clang++, or $CXX), and none "
                           "was found: install one or leave compile=false.")
    return torch.compile(model)


def _manual_optimization_settings(trainer_cfg: DictConfig, model: VAE) -> dict[str, Any]:
    """What the Trainer is given instead of its config when the objective has an optimiser of its own (two
    optimiser steps per batch, manual optimisation): ``max_steps`` still counts training batches, so the
    Trainer gets it times the steps per batch; gradient clipping moves to the module, which applies it
    to the VAE's gradients (Lightning refuses ``gradient_clip_val`` under manual optimisation)."""
    per = model.optimizer_steps_per_batch
    if per == 1:
        return {}
    name = type(model.objective).__name__
    accumulate = trainer_cfg.get("accumulate_grad_batches", 1)
    if accumulate not in (None, 1):
        raise VAEUserError(f"trainer.accumulate_grad_batches={accumulate}: {name} updates the VAE and its own "
                           f"parameters on every batch (objective.optimizer), which gradient accumulation does not "
                           f"support; set it to 1 and raise data.batch_size instead.")
    strategy = str(trainer_cfg.get("strategy", "auto"))
    if "fsdp" in strategy or "deepspeed" in strategy:
        raise VAEUserError(f"trainer.strategy={strategy}: {name} trains a second optimiser by hand (objective."
                           f"optimizer), which this strategy does not support here: use trainer.strategy=ddp.")
    model.gradient_clip_val = trainer_cfg.get("gradient_clip_val")
    model.gradient_clip_algorithm = trainer_cfg.get("gradient_clip_algorithm") or "norm"
    settings: dict[str, Any] = {"gradient_clip_val": None, "gradient_clip_algorithm": None}
    max_steps = trainer_cfg.get("max_steps", -1)
    if max_steps is not None and max_steps != -1:
        settings["max_steps"] = int(max_steps) * per
    return settings


def _named_profiler(trainer_cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """``trainer.profiler=simple|advanced|pytorch``: Lightning's profiler of that name, its report written into the
    run directory (fit-profile.txt, test-profile.txt) rather than only to the console."""
    name = trainer_cfg.get("profiler")
    if not isinstance(name, str) or name.lower() not in ("simple", "advanced", "pytorch"):
        return {}  # none, or one given with its _target_, or a name Lightning knows without a report file
    from lightning.pytorch import profilers

    kind = {"simple": profilers.SimpleProfiler, "advanced": profilers.AdvancedProfiler,
            "pytorch": profilers.PyTorchProfiler}[name.lower()]
    return {"profiler": kind(dirpath=output_dir, filename="profile")}


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, validate and test one model as the config says; return the final metrics.

    Returns the test metrics of the best checkpoint (by val/elbo) and the best
    ``val/elbo``, as plain floats.
    """
    check_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    # seed=null draws a fresh seed; either way the one used is logged and saved in metrics.json.
    seed = L.seed_everything(cfg.get("seed"), workers=True, verbose=False)
    log.info(f"run directory {output_dir} (checkpoints, logs, pictures, metrics.json); seed {seed}")

    resolved = resolve(cfg)
    log.debug("the config, resolved:\n%s", OmegaConf.to_yaml(resolved))  # debug=...: hydra.verbose
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    # The parts are built from the resolved config, which the checkpoints keep (plain values, so
    # they load with weights_only=True and rebuild the model by themselves).
    input_shape = datamodule.input_shape
    if hasattr(datamodule, "check_binarize"):  # before anything is built: binarize is for one channel
        datamodule.check_binarize(input_shape[0])
    warn_likelihood_for_data(cfg, input_shape[0])
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "highest"))
    model = VAE.from_config(resolved, input_shape)
    kl_estimator = model.kl_estimator
    log.info(f"KL(q || p) of {type(model.posterior).__name__} against {type(model.prior).__name__}: "
             f"{kl_estimator.replace('_', '-')}")
    callbacks = _instantiate_group(cfg.get("callbacks"))
    if cfg.trainer.get("fast_dev_run"):  # a dry run saves no checkpoint (Lightning 2.6 still writes last.ckpt)
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=False, **_named_profiler(cfg.trainer, output_dir),
                            **_manual_optimization_settings(cfg.trainer, model))
    if cfg.get("compile"):
        model = _compiled(model, trainer)
    ckpt_path = _resume_path(cfg.get("ckpt_path"), output_dir)
    # The trackers start last, when what can be wrong with the config has been said: a mistake leaves no
    # empty tracker run (wandb run, CSV version directory) behind.
    if trainer.fast_dev_run:
        log.info("trainer.fast_dev_run: no loggers and no checkpoints; the test uses the weights as they are")
    else:
        trainer.loggers = _instantiate_loggers(cfg.get("logger"), output_dir)
    if trainer.world_size > 1:
        # The weights agree across ranks (DDP broadcasts rank 0's); the noise must not: each rank
        # draws its own reparameterisation and binarisation samples.
        L.seed_everything(seed + trainer.global_rank, workers=True, verbose=False)
        log.info(f"rank {trainer.global_rank}: noise seed {seed + trainer.global_rank}")

    resolved["kl_estimator"] = kl_estimator  # which `kl` the logs hold: analytic or monte_carlo
    if trainer.is_global_zero:
        # What eval.py reads back: the config with every interpolation resolved.
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(resolved, output_dir / "resolved_config.yaml")
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)

    with warnings.catch_warnings():
        if ckpt_path:  # resuming in the run's own directory: its checkpoints are expected there
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    metrics: dict[str, float] = {}
    if cfg.get("test", True):
        # The best checkpoint by val/elbo when there is one, else the weights as they are.
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_score is not None:
        metrics["val/elbo_best"] = float(checkpoint.best_model_score)
    metrics["kl_estimator"] = kl_estimator
    metrics["epochs"] = trainer.current_epoch
    metrics["steps"] = batches_seen(trainer)  # training batches: VAE updates, whatever the optimisers
    metrics["seed"] = seed

    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps({"best_checkpoint": best, **metrics}, indent=2) + "\n")
        summary = "  ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items())
                            if k.startswith("test/") and not k.startswith("test/dis/"))
        if summary:
            log.info(f"Final test metrics (nats per example, best checkpoint {best or 'none'}): {summary}")
            print(f"test metrics: {summary}")
        # The headline disentanglement scores (all of them are in metrics.json and the log above).
        scores = "  ".join(f"{k}={metrics[f'test/dis/{k}']:.3f}" for k in HEADLINE_SCORES if f"test/dis/{k}" in metrics)
        if scores:
            print(f"disentanglement: {scores}")
    for logger in trainer.loggers:
        logger.finalize("success")
    _finish_wandb()
    return metrics


def _finish_wandb() -> None:
    """Close the wandb run (if any) so a multirun's next job starts a new one."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def _disentanglement_settings(cfg: DictConfig, datamodule: Any) -> dict[str, Any] | None:
    """With ``disentanglement=true``: its sample sizes, checked before anything is evaluated (and that the
    data has known factors); else None."""
    if not cfg.get("disentanglement"):
        return None
    from .disentanglement.callback import checked_settings, require_known_factors

    require_known_factors(datamodule, "disentanglement=true")  # the data is read (or downloaded) by the test
    return checked_settings("disentanglement_settings", OmegaConf.to_container(
        cfg.get("disentanglement_settings") or OmegaConf.create({})))


def _disentanglement(cfg: DictConfig, model: VAE, datamodule: Any, trainer: L.Trainer,
                     settings: dict[str, Any]) -> dict[str, float]:
    """``dis/<name>``: the disentanglement metrics of the checkpoint (with disentanglement_lib's sample sizes
    unless ``disentanglement_settings`` shrinks them), computed by rank 0 and handed to every process."""
    from .disentanglement.callback import ground_truth_of, measure, run_on_rank_zero

    def compute() -> dict[str, float]:
        start = time.perf_counter()
        scores, _ = measure(model.to(trainer.strategy.root_device), ground_truth_of(datamodule, "disentanglement=true"),
                            int(cfg.get("disentanglement_seed", 0)), settings)
        return {**{f"dis/{k}": float(v) for k, v in scores.items()}, "dis/seconds": time.perf_counter() - start}

    return run_on_rank_zero(trainer, compute)


def _fid_metric(cfg: DictConfig, datamodule: Any):
    """With ``fid=true``: the FID metric (its Inception network loaded), once the data is known to be colour
    images; else None. Any reason it cannot be had is one error, before the evaluation's work."""
    if not cfg.get("fid"):
        return None
    from .fid import check_fid_data, check_fid_settings, fid_metric

    check_fid_settings(cfg.get("fid_samples", 10000), cfg.get("fid_batch_size", 100))
    check_fid_data(datamodule)
    return fid_metric()


def _fid(cfg: DictConfig, model: VAE, datamodule: Any, trainer: L.Trainer, metric) -> dict[str, float]:
    """``test/fid``: ``fid_samples`` samples of the model against the test images, computed by rank 0."""
    from .disentanglement.callback import run_on_rank_zero
    from .fid import frechet_distance

    def compute() -> dict[str, float]:
        start = time.perf_counter()
        device = trainer.strategy.root_device
        fid = frechet_distance(model.to(device), datamodule, metric, cfg.get("fid_samples", 10000),
                               cfg.get("fid_batch_size", 100), int(cfg.get("seed") or 0), device)
        return {"test/fid": fid, "test/fid_seconds": time.perf_counter() - start}

    return run_on_rank_zero(trainer, compute)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a checkpoint: the model is rebuilt from the config inside it, the data from the data config
    inside it (or ``config_path``'s); return the metrics."""
    from .build import checkpoint_config, model_from_checkpoint, read_checkpoint

    if not cfg.get("ckpt_path"):
        raise VAEUserError("ckpt_path is not set: run `python eval.py ckpt_path=<run dir>/checkpoints/last.ckpt`.")
    ckpt = Path(cfg.ckpt_path).expanduser()
    if not ckpt.is_file():
        raise VAEUserError(f"ckpt_path={ckpt} does not exist.")
    checkpoint = read_checkpoint(ckpt)
    config, _ = checkpoint_config(checkpoint, ckpt)
    data_cfg = config.get("data")
    if cfg.get("config_path"):
        config_path = Path(cfg.config_path).expanduser()
        if not config_path.is_file():
            raise VAEUserError(f"config_path={config_path} does not exist: give a run's resolved_config.yaml.")
        data_cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True).get("data")
        if not data_cfg:
            raise VAEUserError(f"config_path={config_path} has no data group: give a run's resolved_config.yaml.")
    if not data_cfg:
        raise VAEUserError(f"{ckpt} does not say what data it was trained on: pass config_path=<run "
                           f"dir>/resolved_config.yaml.")
    data_cfg = OmegaConf.create(data_cfg)
    if cfg.get("data_dir"):
        data_cfg.data_dir = cfg.data_dir
    for key, value in (cfg.get("data") or {}).items():  # data.loader=dataloader, data.eval_batch_size=...
        if value is not None:
            data_cfg[key] = value
    seed = L.seed_everything(cfg.get("seed"), verbose=False)

    datamodule = instantiate(data_cfg)
    dis_settings = _disentanglement_settings(cfg, datamodule)
    fid = _fid_metric(cfg, datamodule)  # checked (and its network loaded) before anything is evaluated
    model = model_from_checkpoint(checkpoint, ckpt, overrides={"objective.num_samples": cfg.num_samples,
                                                               "eval.nll_samples": cfg.nll_samples,
                                                               "eval.nll_chunk_size": cfg.nll_chunk_size})
    trainer = build_trainer(cfg.trainer, enable_checkpointing=False)
    if trainer.world_size > 1:
        L.seed_everything(seed + trainer.global_rank, verbose=False)  # each rank its own noise
    start = time.perf_counter()
    (results,) = trainer.test(model, datamodule=datamodule, verbose=False)
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in results.items()}
    metrics["seconds"] = seconds
    if dis_settings is not None:
        metrics.update(_disentanglement(cfg, model, datamodule, trainer, dis_settings))
    if fid is not None:
        metrics.update(_fid(cfg, model, datamodule, trainer, fid))
    report = {"ckpt_path": str(ckpt), "num_samples": cfg.num_samples, "nll_samples": cfg.nll_samples,
              "kl_estimator": model.kl_estimator, **metrics}
    if trainer.is_global_zero:  # the metrics are already reduced across ranks
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "eval_metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        lines = [f"{k:>12} {v:10.3f}" for k, v in sorted(metrics.items())]
        print(f"evaluated {ckpt} (K={cfg.num_samples} for elbo/iwae, S={cfg.nll_samples} for nll, "
              f"{model.kl_estimator.replace('_', '-')} KL):")
        print("\n".join(lines))
    return metrics
