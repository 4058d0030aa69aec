"""The helpers parts use to check their own arguments, the data arguments, and the devices.

Each part of a model (networks, posterior, prior, likelihood, objective) checks its own
arguments in its constructor with the ``require_*`` helpers below and raises a
:class:`ConfigError` naming its argument; the builder adds the part's config key
(``model.encoder.``). The run-level rules (the groups are there, keys that moved, the
trainer's settings, ...) are in :mod:`vae_lightning.precheck`, which train.py runs before
torch is imported; what is left here for the run is the devices this machine has.

This module imports torch only to count devices, when it does.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from .errors import ConfigError

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


# -- data ----------------------------------------------------------------------------------

def check_data_args(binarize: Any = "none", batch_size: Any = 128, eval_batch_size: Any = None,
                    num_workers: Any = 0, loader: Any = "auto", pin_memory: Any = False, on_device: Any = "auto",
                    in_memory: Any = "auto", memory_limit_gb: Any = None, hflip: Any = False) -> None:
    """The image DataModules' arguments (data group; the defaults are ImageDataModule's). No torch: train.py
    checks the data group with it before the imports (precheck.py), and the DataModule again when built."""
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


# -- devices -------------------------------------------------------------------------------

def _device_count(accelerator: str) -> int | None:
    """How many devices of this kind this machine has (None: not known here)."""
    import torch  # here, not at the top: precheck.py imports this module before torch

    if accelerator in ("gpu", "cuda"):
        return torch.cuda.device_count()
    if accelerator == "mps":
        return int(torch.backends.mps.is_available())
    return None


def check_devices(trainer: Mapping[str, Any]) -> None:
    """The trainer's accelerator and devices against this machine's, before anything is built."""
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


# -- the whole config ----------------------------------------------------------------------

def check_config(cfg: Mapping[str, Any]) -> None:
    """Everything about the composed config that belongs to no single part, before anything is built: what
    precheck.py checks without torch (train.py has run it already), and the devices."""
    from .precheck import check_train_config

    check_train_config(cfg)
    check_devices(cfg["trainer"])


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


def __getattr__(name: str) -> Any:
    # Moved to precheck.py (no torch there); the old names still work.
    if name in ("RENAMED", "check_overrides", "check_moved_keys", "MATMUL_PRECISIONS"):
        from . import precheck

        return getattr(precheck, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
