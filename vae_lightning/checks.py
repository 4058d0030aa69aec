"""Checks of the config that belong to no single part, and the helpers parts use to check their own.

Each part of a model (networks, posterior, prior, likelihood, objective) checks its own
arguments in its constructor with the ``require_*`` helpers below and raises a
:class:`ConfigError` naming its argument; the builder adds the part's config key
(``model.encoder.``). What is left here: the run-level rules (the groups are there, keys
that moved), the trainer's devices, and the data arguments.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError, VAEUserError

log = logging.getLogger("vae_lightning")

BINARIZATIONS = ("dynamic", "static", "none")
LOADERS = ("auto", "tensor", "dataloader")


# -- helpers for parts ---------------------------------------------------------------------

def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_int(key: str, value: Any, least: int | None = None) -> int:
    """``value`` as an integer >= ``least``, or a ConfigError naming ``key``."""
    if not is_int(value):
        raise ConfigError(key, value, "must be an integer")
    if least is not None and value < least:
        raise ConfigError(key, value, f"must be an integer >= {least}")
    return value


def require_number(key: str, value: Any, least: float | None = None, above: float | None = None) -> float:
    """``value`` as a number (>= ``least``, > ``above``), or a ConfigError naming ``key``."""
    if not is_number(value):
        raise ConfigError(key, value, "must be a number")
    if least is not None and value < least:
        raise ConfigError(key, value, f"must be >= {least}")
    if above is not None and not value > above:
        raise ConfigError(key, value, f"must be > {above}")
    return float(value)


def require_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "must be true or false")
    return value


def require_sizes(key: str, values: Any, example: str = "[512, 256]") -> list[int]:
    """A non-empty list of positive integers (layer sizes, channels)."""
    if not isinstance(values, (list, tuple)) or not values or not all(is_int(v) and v >= 1 for v in values):
        raise ConfigError(key, values, f"must be a non-empty list of positive integers, e.g. {example}")
    return list(values)


def require_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(key, value, f"must be one of {list(choices)}")
    return value


# -- keys that moved -----------------------------------------------------------------------

#: Keys of the flat model config of earlier versions -> what to write now ({value}: the value given).
RENAMED = {
    "model.architecture": "model={value}",
    "model.hidden_dims": "model.encoder.hidden_dims={value} (the mlp decoder mirrors it)",
    "model.channels": "model.encoder.channels={value} (the conv decoder mirrors it)",
    "model.activation": "model.encoder.activation={value} (the decoder follows it)",
    "model.likelihood": "model/likelihood={value} (a config group now)",
    "model.sigma": "model.likelihood.sigma={value}",
    "model.min_sigma": "model.likelihood.min_sigma={value}",
    "model.lr": "model.optimizer.lr={value}",
    "model.weight_decay": "model.optimizer.weight_decay={value}",
    "model.adam_eps": "model.optimizer.eps={value}",
    "model.fused_optimizer": "model.optimizer.fused={value}",
    "model.lr_schedule": "model/lr_scheduler={value} (a config group now)",
    "objective.name": "objective={value}",
}


def _moved(key: str, value: Any) -> VAEUserError:
    return VAEUserError(f"{key} has moved: write {RENAMED[key].format(value=value)}.")


def check_overrides(args: Iterable[str]) -> None:
    """Command-line overrides that name a key which has moved fail naming the new one (before Hydra,
    whose own message would only say the key is not in the config)."""
    for arg in args:
        if arg.startswith("-"):
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key in RENAMED:
            raise _moved(key, value)


def check_moved_keys(cfg: Mapping[str, Any]) -> None:
    """The same for a composed config (an experiment file of an earlier version, say)."""
    for key in RENAMED:
        value = OmegaConf.select(cfg, key, default=None) if isinstance(cfg, DictConfig) else None
        if value is not None and not isinstance(value, (DictConfig, dict)):
            raise _moved(key, value)


# -- data ----------------------------------------------------------------------------------

def check_data_args(binarize: Any, batch_size: Any, eval_batch_size: Any, num_workers: Any, loader: Any = "auto",
                    pin_memory: Any = False, on_device: Any = "auto", in_memory: Any = "auto",
                    memory_limit_gb: Any = None, hflip: Any = False) -> None:
    """The image DataModules' arguments (data group)."""
    if binarize not in BINARIZATIONS:
        raise ConfigError("data.binarize", binarize, f"is not known: choose one of {list(BINARIZATIONS)}")
    for key, value, least in [("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size or 1, 1),
                              ("num_workers", num_workers, 0)]:
        require_int(f"data.{key}", value, least)
    if loader not in LOADERS:
        raise ConfigError("data.loader", loader, f"is not known: choose one of {list(LOADERS)}")
    for key, value in (("data.on_device", on_device), ("data.in_memory", in_memory)):
        if value not in (True, False, "auto"):
            raise ConfigError(key, value, "must be true, false or auto")
    if memory_limit_gb is not None:
        require_number("data.memory_limit_gb", memory_limit_gb, above=0)
    require_bool("data.hflip", hflip)
    if loader == "tensor" and in_memory is False:
        raise ConfigError("data.loader", loader, "needs the data in memory, and data.in_memory=false streams it: "
                                                 "use data.loader=auto")
    if loader == "tensor" and (num_workers or pin_memory):
        key, value = ("data.num_workers", num_workers) if num_workers else ("data.pin_memory", pin_memory)
        raise ConfigError(key, value, "applies to DataLoader paths only: the tensor loader slices batches out "
                                      "of memory in the main process (set data.loader=dataloader, or stream with "
                                      "data.in_memory=false, to use worker processes)")


# -- trainer -------------------------------------------------------------------------------

def _device_count(accelerator: str) -> int | None:
    """How many devices of this kind this machine has (None: not known here)."""
    if accelerator in ("gpu", "cuda"):
        return torch.cuda.device_count()
    if accelerator == "mps":
        return int(torch.backends.mps.is_available())
    return None


def check_trainer(trainer: Mapping[str, Any]) -> None:
    """The trainer's devices and clipping, before anything is built. Precision and strategy names and
    the number of epochs are Lightning's to check (see ``run.build_trainer``)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    devices = trainer.get("devices", "auto")
    available = _device_count(accelerator)
    if available == 0:
        raise ConfigError("trainer.accelerator", accelerator, "but this machine has no such device: use "
                                                              "trainer.accelerator=cpu (or auto)")
    if is_int(devices):
        if devices < 1 and devices != -1:
            raise ConfigError("trainer.devices", devices, "must be >= 1, -1 (all) or auto")
        if available is not None and devices > available:
            raise ConfigError("trainer.devices", devices, f"but this machine has {available} {accelerator} device(s)")
    elif isinstance(devices, (list, tuple)) and available is not None and any(d >= available for d in devices):
        raise ConfigError("trainer.devices", list(devices), f"names a device this machine does not have "
                                                            f"({available} found)")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not is_number(clip) or clip < 0):
        raise ConfigError("trainer.gradient_clip_val", clip, "must be a number >= 0 (or null for no clipping)")


# -- the whole config ----------------------------------------------------------------------

#: torch.set_float32_matmul_precision's choices, for the config's matmul_precision.
MATMUL_PRECISIONS = ("highest", "high", "medium")


def check_config(cfg: Mapping[str, Any]) -> None:
    """What belongs to no single part, on the composed config, before anything is built."""
    for group in ("data", "model", "trainer"):
        if not cfg.get(group) or "_target_" not in cfg[group]:
            raise VAEUserError(f"The config has no usable `{group}` group: choose one, e.g. {group}=... "
                               f"(see `python train.py --help`).")
    check_moved_keys(cfg)
    try:
        missing = sorted(OmegaConf.missing_keys(cfg)) if isinstance(cfg, DictConfig) else []
    except OmegaConfBaseException:  # a broken interpolation: resolving the config names it
        missing = []
    if missing:
        example = "data.path=/data/my_images" if "data.path" in missing else f"{missing[0]}=..."
        raise VAEUserError(f"{', '.join(missing)} must be set (the config leaves {'it' if len(missing) == 1 else 'them'} "
                           f"to you): add {example} to the command line.")
    check_trainer(cfg["trainer"])
    precision = cfg.get("matmul_precision", "highest")
    if precision not in MATMUL_PRECISIONS:
        raise ConfigError("matmul_precision", precision, f"but it must be one of {', '.join(MATMUL_PRECISIONS)}")


def warn_likelihood_for_data(cfg: Mapping[str, Any], channels: int) -> None:
    """A likelihood for one kind of data on another: numbers that mean little, said at the start, with
    advice that works for the data at hand (``channels`` of its images: binarisation is for one channel)."""
    from hydra.utils import get_class

    likelihood = cfg["model"].get("likelihood") or {}
    binarize = cfg["data"].get("binarize")
    if "_target_" not in likelihood or binarize is None:
        return
    try:
        kind = getattr(get_class(likelihood["_target_"]), "data_kind", None)
        # Data whose images are binary as stored (dSprites) needs no binarisation.
        binary_data = getattr(get_class(cfg["data"]["_target_"]), "binary_images", False)
    except Exception:  # a bad target: the model's builder says so
        return
    name = likelihood["_target_"].rsplit(".", 1)[-1]
    if kind == "binary" and binarize == "none" and not binary_data:
        fix = ("data.binarize=dynamic or model/likelihood=continuous_bernoulli" if channels == 1 else
               "an 8-bit likelihood for colour data, e.g. model/likelihood=discretized_logistic (or "
               "discretized_mixture, categorical)")
        log.warning("A likelihood over binary data (model.likelihood: %s) on data.binarize=none: its numbers on "
                    "intensities are not log-likelihoods. Use %s.", name, fix)
    elif kind == "discrete" and binarize != "none":
        log.warning("An 8-bit likelihood (model.likelihood: %s) on binarised data (data.binarize=%s): it only ever "
                    "sees the values 0 and 255, so its bits per dimension mean little. Use data.binarize=none, or "
                    "model/likelihood=bernoulli for binary data.", name, binarize)
