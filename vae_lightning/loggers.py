"""Loggers built from config. wandb goes offline by itself when it cannot go online."""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.pytorch.loggers import WandbLogger

from .errors import VAEUserError

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


def _wandb_host() -> tuple[str, int]:
    url = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str = "auto") -> tuple[str, str]:
    """(mode, reason): 'online' only with an API key and a reachable server, else 'offline'.

    ``WANDB_MODE`` in the environment wins over the config, as wandb users expect.
    """
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return ("offline" if env_mode == "dryrun" else env_mode), "WANDB_MODE is set"
    if mode not in WANDB_MODES:
        raise VAEUserError(f"logger.wandb.mode={mode!r} is not known: choose one of {list(WANDB_MODES)}.")
    if mode == "online" and not _has_api_key(_wandb_host()[0]):
        raise VAEUserError("logger.wandb.mode=online but no wandb API key is set: run `wandb login`, set "
                           "WANDB_API_KEY, or use logger.wandb.mode=auto (offline without a key).")
    if mode != "auto":
        return mode, "logger.wandb.mode"
    host, port = _wandb_host()
    if not _has_api_key(host):
        return "offline", f"no API key for {host} (run `wandb login` or set WANDB_API_KEY)"
    if not _reachable(host, port):
        return "offline", f"{host} is not reachable"
    return "online", "API key found and server reachable"


def _sweep_group_and_tags() -> tuple[str | None, list[str]]:
    """In a Hydra multirun: a group named after the sweep directory, and this job's overrides as tags."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):  # not inside a Hydra app
        return None, []
    if hc.mode != RunMode.MULTIRUN:
        return None, []
    group = "sweep-" + "_".join(Path(hc.sweep.dir).parts[-2:])
    return group, [item[:64] for item in hc.overrides.task]


def wandb_logger(save_dir: str, mode: str = "auto", **kwargs: Any) -> WandbLogger:
    """A WandbLogger that never prompts and never hangs.

    mode: ``auto`` (online when an API key is set and the server answers, else
    offline), ``online``, ``offline`` or ``disabled``. An offline run is kept
    under ``save_dir/wandb``; ``wandb sync <that dir>`` uploads it later.
    Other arguments go to ``WandbLogger`` (project, entity, group, tags, name, ...).
    """
    resolved, reason = resolve_wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if resolved == "offline":
        log.info(f"wandb runs offline ({reason}); the run is saved under {save_dir}/wandb; "
                 f"upload it later with: wandb sync {save_dir}/wandb/offline-run-*")
    group, tags = _sweep_group_and_tags()
    if group and not kwargs.get("group"):
        kwargs["group"] = group  # the runs of one multirun side by side in the dashboard
        kwargs["tags"] = [*(kwargs.get("tags") or []), *tags]
    # wandb would otherwise copy the console (progress bars included) into the run.
    os.environ.setdefault("WANDB_CONSOLE", "off")
    if resolved == "disabled":
        kwargs["mode"] = "disabled"
    offline = resolved == "offline"
    log_model = kwargs.pop("log_model", False)
    # Lightning refuses log_model offline, but wandb keeps the artifact in the offline run and
    # `wandb sync` uploads it with the rest: ask for it after construction.
    logger = WandbLogger(save_dir=save_dir, offline=offline, log_model=False if offline else log_model, **kwargs)
    logger._log_model = log_model
    return logger


def define_wandb_metrics(logger: WandbLogger) -> None:
    """Summaries the runs table shows: the best validation bound (max), the lowest validation
    recon and KL; the rest keep their last value. Charts group by prefix into the sections
    ``train/``, ``val/``, ``test/`` and ``images/``, all against ``trainer/global_step``."""
    run = logger.experiment
    if not hasattr(run, "define_metric"):  # rank > 0: a dummy
        return
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    for key in ("val/elbo", "val/iwae"):
        run.define_metric(key, step_metric="trainer/global_step", summary="max,last")
    for key in ("val/recon", "val/kl"):
        run.define_metric(key, step_metric="trainer/global_step", summary="min,last")
