"""Every check of the config in one place, each failing with one line: the key, the value, what is allowed.

``check_config`` runs on the composed config before any work starts (train.py);
the model and the DataModules run their own part again when built from Python.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from .errors import VAEUserError

log = logging.getLogger("vae_lightning")

ARCHITECTURES = ("mlp", "conv")
LR_SCHEDULES = ("constant", "cosine", "burda")
OBJECTIVES = ("elbo", "iwae")
KL_SCHEDULES = ("constant", "linear", "cyclical")
BINARIZATIONS = ("dynamic", "static", "none")
LOADERS = ("tensor", "dataloader")
PRECISIONS = ("64", "64-true", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16")
MULTI_DEVICE_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp", "deepspeed")


def _fail(key: str, value: Any, rule: str) -> None:
    raise VAEUserError(f"{key}={value!r} {rule}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_model_args(hp: Mapping[str, Any]) -> None:
    """The VAE's arguments (model, objective and eval groups)."""
    for key, config_key in [("latent_dim", "model.latent_dim"), ("num_samples", "objective.num_samples"),
                            ("warmup_steps", "objective.warmup_steps"), ("cycle_steps", "objective.cycle_steps"),
                            ("free_bits_group_size", "objective.free_bits_group_size"),
                            ("nll_samples", "eval.nll_samples")]:
        if not _is_int(hp[key]):
            _fail(config_key, hp[key], "must be an integer")
    for key, config_key in [("beta", "objective.beta"), ("lr", "model.lr"), ("sigma", "model.sigma"),
                            ("min_sigma", "model.min_sigma"), ("free_bits", "objective.free_bits"),
                            ("weight_decay", "model.weight_decay"), ("cycle_ratio", "objective.cycle_ratio"),
                            ("adam_eps", "model.adam_eps")]:
        if not _is_number(hp[key]):
            _fail(config_key, hp[key], "must be a number")
    chunk = hp.get("nll_chunk_size")
    if chunk is not None and (not _is_int(chunk) or chunk < 1):
        _fail("eval.nll_chunk_size", chunk, "must be an integer >= 1, or null (as many as keep memory bounded)")
    for key in ("hidden_dims", "channels"):
        values = hp[key]
        if not isinstance(values, (list, tuple)) or not values or not all(_is_int(v) and v >= 1 for v in values):
            _fail(f"model.{key}", values, "must be a non-empty list of positive integers, e.g. [512, 256]")
    rules = [  # (holds, config key, argument, what is allowed)
        (hp["latent_dim"] >= 1, "model.latent_dim", "latent_dim", "must be >= 1"),
        (hp["architecture"] in ARCHITECTURES, "model.architecture", "architecture", f"must be one of {list(ARCHITECTURES)}"),
        (hp["objective"] in OBJECTIVES, "objective.name", "objective", f"must be one of {list(OBJECTIVES)}"),
        (hp["beta"] >= 0, "objective.beta", "beta", "must be >= 0"),
        (hp["num_samples"] >= 1, "objective.num_samples", "num_samples", "must be >= 1"),
        (hp["free_bits"] >= 0, "objective.free_bits", "free_bits", "must be >= 0"),
        (hp["free_bits_group_size"] >= 1 and hp["latent_dim"] % hp["free_bits_group_size"] == 0,
         "objective.free_bits_group_size", "free_bits_group_size", f"must divide model.latent_dim={hp['latent_dim']}"),
        (not (hp["free_bits"] > 0 and hp["objective"] == "iwae"), "objective.free_bits", "free_bits",
         "applies to the ELBO only: set it to 0 with objective=iwae"),
        (hp["lr"] > 0, "model.lr", "lr", "must be > 0"),
        (hp["weight_decay"] >= 0, "model.weight_decay", "weight_decay", "must be >= 0"),
        (hp["lr_schedule"] in LR_SCHEDULES, "model.lr_schedule", "lr_schedule", f"must be one of {list(LR_SCHEDULES)}"),
        (hp["nll_samples"] >= 0, "eval.nll_samples", "nll_samples", "must be >= 0 (0 turns the test NLL off)"),
        (hp["kl_schedule"] in KL_SCHEDULES, "objective.kl_schedule", "kl_schedule", f"must be one of {list(KL_SCHEDULES)}"),
        (hp["kl_schedule"] != "linear" or hp["warmup_steps"] >= 1, "objective.warmup_steps", "warmup_steps",
         "must be >= 1 for kl_schedule=linear"),
        (hp["kl_schedule"] != "cyclical" or hp["cycle_steps"] >= 1, "objective.cycle_steps", "cycle_steps",
         "must be >= 1 for kl_schedule=cyclical"),
        (0 < hp["cycle_ratio"] <= 1, "objective.cycle_ratio", "cycle_ratio", "must be in (0, 1]"),
    ]
    for holds, config_key, arg, rule in rules:
        if not holds:
            _fail(config_key, hp[arg], rule)


def check_data_args(binarize: Any, batch_size: Any, eval_batch_size: Any, val_size: Any, num_workers: Any,
                    loader: Any = "tensor", pin_memory: Any = False, on_device: Any = "auto") -> None:
    """The image DataModules' arguments (data group)."""
    if binarize not in BINARIZATIONS:
        _fail("data.binarize", binarize, f"is not known: choose one of {list(BINARIZATIONS)}")
    for key, value, least in [("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size or 1, 1),
                              ("val_size", val_size, 1), ("num_workers", num_workers, 0)]:
        if not _is_int(value) or value < least:
            _fail(f"data.{key}", value, f"must be an integer >= {least}")
    if loader not in LOADERS:
        _fail("data.loader", loader, f"is not known: choose one of {list(LOADERS)}")
    if on_device not in (True, False, "auto"):
        _fail("data.on_device", on_device, "must be true, false or auto")
    if loader == "tensor" and (num_workers or pin_memory):
        key, value = ("data.num_workers", num_workers) if num_workers else ("data.pin_memory", pin_memory)
        _fail(key, value, "applies to data.loader=dataloader only: the tensor loader slices batches out of memory "
                          "in the main process (set data.loader=dataloader to use worker processes)")


def _device_count(accelerator: str) -> int | None:
    """How many devices of this kind this machine has (None: not known here)."""
    if accelerator in ("gpu", "cuda"):
        return torch.cuda.device_count()
    if accelerator == "mps":
        return int(torch.backends.mps.is_available())
    return None


def check_trainer(trainer: Mapping[str, Any]) -> None:
    """The trainer group: accelerator, devices, strategy, precision, epochs, clipping."""
    accelerator = str(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", "auto")
    strategy = trainer.get("strategy", "auto")
    num_nodes = trainer.get("num_nodes", 1) or 1
    precision = trainer.get("precision")
    if precision is not None and str(precision) not in PRECISIONS:
        _fail("trainer.precision", precision, f"is not known: choose one of {list(PRECISIONS)}")
    available = _device_count(accelerator)
    if available == 0:
        _fail("trainer.accelerator", accelerator, "but this machine has no such device: use trainer.accelerator=cpu "
                                                  "(or auto)")
    if _is_int(devices):
        if devices < 1 and devices != -1:
            _fail("trainer.devices", devices, "must be >= 1, -1 (all) or auto")
        if available is not None and devices > available:
            _fail("trainer.devices", devices, f"but this machine has {available} {accelerator} device(s)")
    elif isinstance(devices, (list, tuple)) and available is not None and any(d >= available for d in devices):
        _fail("trainer.devices", list(devices), f"names a device this machine does not have ({available} found)")
    if str(strategy) in MULTI_DEVICE_STRATEGIES and devices == 1 and num_nodes == 1:
        _fail("trainer.strategy", strategy, "needs several devices: set trainer.devices=N (N > 1) or trainer.devices=-1, "
                                            "or use trainer.strategy=auto for one device")
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and (not _is_int(max_epochs) or max_epochs < -1):
        _fail("trainer.max_epochs", max_epochs, "must be an integer >= 0, or -1 for no limit")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not _is_number(clip) or clip < 0):
        _fail("trainer.gradient_clip_val", clip, "must be a number >= 0 (or null for no clipping)")


def check_config(cfg: Mapping[str, Any]) -> None:
    """All of the composed config, before anything is built."""
    for group in ("data", "model", "trainer"):
        if not cfg.get(group) or "_target_" not in cfg[group]:
            raise VAEUserError(f"The config has no usable `{group}` group: choose one, e.g. {group}=... "
                               f"(see `python train.py --help`).")
    check_trainer(cfg["trainer"])
    data, model = cfg["data"], cfg["model"]
    binarize, likelihood = data.get("binarize"), model.get("likelihood")
    if binarize == "none" and likelihood == "bernoulli":
        log.warning("model.likelihood=bernoulli on data.binarize=none: the Bernoulli of non-binary intensities is "
                    "not a normalised density, so its numbers are not log-likelihoods. Use data.binarize=dynamic "
                    "or model.likelihood=continuous_bernoulli.")
