"""Kept for configs and code that name ``vae_lightning.loggers`` (the runs' resolved configs among them): the
trackers now live in :mod:`vae_lightning.trackers`."""

from __future__ import annotations

from .trackers import (WANDB_MODES, define_wandb_metrics, mlflow_logger, resolve_wandb_mode, tensorboard_logger,
                       wandb_logger)

__all__ = ["WANDB_MODES", "define_wandb_metrics", "mlflow_logger", "resolve_wandb_mode", "tensorboard_logger",
           "wandb_logger"]
