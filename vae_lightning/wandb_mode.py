"""wandb's mode (auto, online, offline, disabled) from the config, the environment and the network.

Plain Python, no torch, Lightning or wandb: the config check (``precheck``) asks it before those are imported.
"""

from __future__ import annotations

import netrc
import os
import socket
from urllib.parse import urlsplit

from .errors import VAEUserError


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


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
    if not reachable(host, port):
        return "offline", f"{host} is not reachable"
    return "online", "API key found and server reachable"
