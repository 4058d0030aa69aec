"""What can be said about a config before torch, Lightning and wandb are imported.

train.py and eval.py run these checks as soon as Hydra has composed the config, and import the rest
only then: a mistake here is reported in about a second, not after seconds of imports, and before any
checkpoint or tracker run is made (Hydra has made the run directory with its .hydra/ and log file). What needs the parts themselves is checked when
they are built (each part's constructor names its own argument: ``objective.beta``,
``model.encoder.hidden_dims``, ...), as are the devices this machine has and the optimiser's own rules.

Nothing in this module imports torch (tests/test_fast_errors.py runs it with torch unimportable).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .checks import check_data_args, is_int, is_number, require_int
from .errors import ConfigError, VAEUserError

# -- the command line ----------------------------------------------------------------------

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


def _split(arg: str) -> tuple[str, str]:
    key, _, value = arg.partition("=")
    return key.lstrip("+~"), value


def check_overrides(args: Iterable[str]) -> None:
    """Command-line overrides that name a key which has moved fail naming the new one (before Hydra,
    whose own message would only say the key is not in the config)."""
    for arg in args:
        if arg.startswith("-"):
            continue
        key, value = _split(arg)
        if key in RENAMED:
            raise _moved(key, value)


def debug_last(args: Iterable[str]) -> list[str]:
    """The overrides with a debug preset (``debug=NAME``, conf/debug/) moved to the end as ``+debug=NAME``.

    Hydra applies the groups in the order of the defaults list, and ``+experiment=...`` is appended to
    its end: a preset in the list's own place would come before the experiment, whose ``max_epochs``,
    logger and validation interval would then win. Appended after it, the preset has the last word
    but for keys set on the command line (``debug=limit trainer.max_epochs=5`` still runs 5 epochs).
    The compose API (tests, notebooks) takes the same list: ``compose("train", debug_last(overrides))``.
    """
    args = list(args)
    is_preset = [not a.startswith(("-", "~")) and _split(a)[0] == "debug" and "=" in a for a in args]
    presets = [f"+debug={_split(a)[1]}" for a, p in zip(args, is_preset) if p and _split(a)[1] not in ("", "null")]
    rest = [a for a, p in zip(args, is_preset) if not p]
    # After the last override, before any flag that follows (`--cfg job`: Hydra's parser wants them last).
    overrides = [i for i, a in enumerate(rest) if "=" in a and not a.startswith("-")]
    at = overrides[-1] + 1 if overrides else len(rest)
    return [*rest[:at], *presets, *rest[at:]]


# -- helpers -------------------------------------------------------------------------------

_ABSENT = object()


def _get(cfg: Any, key: str) -> Any:
    """``cfg``'s value at ``key`` (interpolations resolved), or _ABSENT when it is not there, is ??? or does
    not resolve (that is said later, with the key, by whoever resolves the whole config)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _group(cfg: Any, key: str) -> Mapping[str, Any]:
    node = _get(cfg, key)
    return node if isinstance(node, Mapping) else {}


# -- the run -------------------------------------------------------------------------------

#: torch.set_float32_matmul_precision's choices, for the config's matmul_precision.
MATMUL_PRECISIONS = ("highest", "high", "medium")


def check_moved_keys(cfg: Mapping[str, Any]) -> None:
    """Keys that moved, in a composed config (an experiment file of an earlier version, say)."""
    for key in RENAMED:
        value = _get(cfg, key)
        if value is not _ABSENT and value is not None and not isinstance(value, (DictConfig, Mapping)):
            raise _moved(key, value)


def check_groups(cfg: Mapping[str, Any], groups: Iterable[str] = ("data", "model", "trainer")) -> None:
    for group in groups:
        if not cfg.get(group) or "_target_" not in cfg[group]:
            raise VAEUserError(f"The config has no usable `{group}` group: choose one, e.g. {group}=... "
                               f"(see `python train.py --help`).")


def check_missing(cfg: Mapping[str, Any]) -> None:
    """Keys the config leaves to the user (``???``)."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg)) if isinstance(cfg, DictConfig) else []
    except OmegaConfBaseException:  # a broken interpolation: resolving the config names it
        missing = []
    missing = [key for key in missing if not key.startswith("hydra.")]
    if missing:
        example = "data.path=/data/my_images" if "data.path" in missing else f"{missing[0]}=..."
        them = "it" if len(missing) == 1 else "them"
        raise VAEUserError(f"{', '.join(missing)} must be set (the config leaves {them} to you): add {example} to "
                           f"the command line.")


def check_ckpt_path(ckpt_path: Any) -> None:
    """``ckpt_path``: null, ``auto`` (resume the run directory's last.ckpt when there is one) or a file."""
    if ckpt_path in (None, "", "auto", _ABSENT):
        return
    if not Path(str(ckpt_path)).expanduser().is_file():
        raise VAEUserError(f"ckpt_path={ckpt_path} does not exist: give the path of a .ckpt file, or ckpt_path=auto "
                           f"to resume the run directory's checkpoints/last.ckpt when there is one.")


def check_eval_settings(cfg: Mapping[str, Any]) -> None:
    """The ``eval`` group: the test log-likelihood's samples and chunk size."""
    nll_samples = _get(cfg, "eval.nll_samples")
    if nll_samples is not _ABSENT:
        require_int("eval.nll_samples", nll_samples, 0)
    chunk = _get(cfg, "eval.nll_chunk_size")
    if chunk not in (None, _ABSENT):
        require_int("eval.nll_chunk_size", chunk, 1)


# -- trainer -------------------------------------------------------------------------------

#: Lightning's precision values (lightning.fabric.plugins.precision.precision._PRECISION_INPUT; a test
#: keeps this list equal to Lightning's).
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "32-true", "64-true", 64, 32, 16, "64", "32", "16", "bf16")
#: Lightning's profilers by name; simple and advanced write their report into the run directory.
PROFILERS = ("simple", "advanced", "pytorch", "xla")
_PARALLEL_STRATEGIES = ("ddp", "fsdp", "deepspeed")


def _one_device(devices: Any) -> bool:
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    return devices == 1 or (isinstance(devices, (list, tuple)) and len(devices) == 1)


def check_trainer_settings(trainer: Mapping[str, Any]) -> None:
    """The ``trainer`` group's settings that need no device and no Lightning: clipping, epochs and steps,
    precision, a parallel strategy on one device, the profiler. The messages say what Lightning would
    say, seconds earlier; the devices this machine has are checked after the imports (checks.py)."""
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not is_number(clip) or clip < 0):
        raise ConfigError("trainer.gradient_clip_val", clip, "must be a number >= 0 (or null for no clipping)")
    max_epochs = trainer.get("max_epochs")
    if is_int(max_epochs) and max_epochs < -1:
        raise VAEUserError(f"trainer: `max_epochs` must be a non-negative integer or -1. You passed in {max_epochs}.")
    max_steps = trainer.get("max_steps")
    if is_int(max_steps) and max_steps < -1:
        raise VAEUserError(f"trainer: `max_steps` must be a non-negative integer or -1 (infinite steps). You passed "
                           f"in {max_steps}.")
    accumulate = trainer.get("accumulate_grad_batches")
    if accumulate is not None:  # Lightning takes 0 and the first step divides by it
        require_int("trainer.accumulate_grad_batches", accumulate, 1)
    precision = trainer.get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise VAEUserError(f"trainer: Precision {precision!r} is invalid. Allowed precision values: {PRECISIONS}")
    strategy = trainer.get("strategy", "auto")
    if (isinstance(strategy, str) and strategy.startswith(_PARALLEL_STRATEGIES)
            and _one_device(trainer.get("devices", "auto")) and trainer.get("num_nodes", 1) in (1, None)):
        raise VAEUserError(f"trainer.strategy={strategy!r} needs several devices: set trainer.devices=N "
                           f"(N > 1) or trainer.devices=-1, or use trainer.strategy=auto for one device.")
    profiler = trainer.get("profiler")
    if profiler is not None and not isinstance(profiler, Mapping) and str(profiler).lower() not in PROFILERS:
        raise ConfigError("trainer.profiler", profiler, f"must be one of {list(PROFILERS)} or null (simple and "
                                                        f"advanced write their report into the run directory)")


# -- data and loggers ----------------------------------------------------------------------

#: The arguments every DataModule of vae_lightning.data takes (ImageDataModule's), checked by check_data_args.
DATA_ARGS = ("binarize", "batch_size", "eval_batch_size", "num_workers", "loader", "pin_memory", "on_device",
             "in_memory", "memory_limit_gb", "hflip")


def check_data_group(data: Mapping[str, Any]) -> None:
    """The data group's common arguments when it is one of this package's DataModules (a DataModule of
    your own checks its own when it is built)."""
    if not str(data.get("_target_", "")).startswith("vae_lightning.data."):
        return
    given = {key: data[key] for key in DATA_ARGS if key in data and data[key] is not _ABSENT}
    check_data_args(**given)


def check_loggers(loggers: Mapping[str, Any]) -> None:
    """The wandb logger's mode when the config names one (an unknown mode; online without an API key). ``auto``
    is decided when the logger starts, as it asks the network."""
    for entry in loggers.values():
        target = str(entry.get("_target_", "")) if isinstance(entry, Mapping) else ""
        if not (target.startswith("vae_lightning.") and target.endswith(".wandb_logger")):
            continue
        mode = entry.get("mode", "auto")
        if mode != "auto" and not os.environ.get("WANDB_MODE"):  # WANDB_MODE wins over the config
            # The tracker's own rule, in a module without torch, Lightning or wandb.
            from .wandb_mode import resolve_wandb_mode

            resolve_wandb_mode(mode)


# -- the whole config ----------------------------------------------------------------------

def _plain_group(cfg: Any, key: str) -> dict[str, Any]:
    """A group's direct values, each resolved on its own (one that does not resolve is left out)."""
    group = _group(cfg, key)
    if not isinstance(group, DictConfig):
        return dict(group)
    values = {k: _get(cfg, f"{key}.{k}") for k in group}
    return {k: v for k, v in values.items() if v is not _ABSENT}


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """train.py's config, before anything is imported or built (run.train runs it too)."""
    check_groups(cfg)
    check_moved_keys(cfg)
    check_missing(cfg)
    precision = _get(cfg, "matmul_precision")
    if precision is not _ABSENT and precision not in MATMUL_PRECISIONS:
        raise ConfigError("matmul_precision", precision, f"but it must be one of {', '.join(MATMUL_PRECISIONS)}")
    latent_dim = _get(cfg, "model.latent_dim")
    if latent_dim is not _ABSENT:
        require_int("model.latent_dim", latent_dim, 1)
    check_eval_settings(cfg)
    check_trainer_settings(_plain_group(cfg, "trainer"))
    check_data_group(_plain_group(cfg, "data"))
    check_ckpt_path(_get(cfg, "ckpt_path"))
    check_loggers(_group(cfg, "logger"))


def check_eval_config(cfg: Mapping[str, Any]) -> None:
    """eval.py's config, before anything is imported or read."""
    ckpt_path = _get(cfg, "ckpt_path")
    if ckpt_path in (None, "", _ABSENT):
        raise VAEUserError("ckpt_path is not set: run `python eval.py ckpt_path=<run dir>/checkpoints/last.ckpt`.")
    if not Path(str(ckpt_path)).expanduser().is_file():
        raise VAEUserError(f"ckpt_path={Path(str(ckpt_path)).expanduser()} does not exist.")
    config_path = _get(cfg, "config_path")
    if config_path not in (None, "", _ABSENT) and not Path(str(config_path)).expanduser().is_file():
        raise VAEUserError(f"config_path={Path(str(config_path)).expanduser()} does not exist: give a run's "
                           f"resolved_config.yaml.")
    for key, least in (("num_samples", 1), ("nll_samples", 0)):
        value = _get(cfg, key)
        if value is not _ABSENT:
            require_int(key, value, least)
    chunk = _get(cfg, "nll_chunk_size")
    if chunk not in (None, _ABSENT):
        require_int("nll_chunk_size", chunk, 1)
    check_trainer_settings(_plain_group(cfg, "trainer"))
