"""What reaches the console: the lines a user reads or acts on. The run's log file (<run dir>/train.log,
Hydra's job log) keeps every line.

conf/hydra/default.yaml sends Lightning's lines through the root logger (not its own handlers on stderr) and
puts ``ConsoleFilter`` on the console handler. Hydra builds that filter while it sets up logging, before
train.py imports torch or Lightning, so this module imports neither.
"""

from __future__ import annotations

import logging
import os
from typing import Any

# In the log file only: the devices Lightning looked for, its read-back of limit_*_batches=1, its tips for
# other services, that our model summary replaces its own, that the LR schedule's length is being counted, two
# lines the epoch and test lines already say; and a wandb warning about an argument Lightning passes it.
FILE_ONLY = (
    "GPU available:", "TPU available:", "HPU available:", "LOCAL_RANK:",
    "was configured so",
    "💡 Tip", "litlogger", "litmodels",
    "Trainer already configured with model summary callbacks",
    "to estimate number of stepping batches",
    "`Trainer.fit` stopped:", "Loaded model weights from the checkpoint",
    "The anonymous setting has no effect",
)
# wandb prints its own lines to the terminal (its version, where the run is kept and how to sync it, which our
# own offline line says, the history at the end); route_wandb_messages sends them to logging under this name,
# and below warnings only the links to an online run stay on the console.
WANDB_LOG = "vae_lightning.wandb"
WANDB_SHOWN = ("View run",)


class ConsoleFilter(logging.Filter):
    """The console handler's filter: the lines above, and wandb's below warning level, stay off the console
    (the log file keeps them); warnings and everything of ours pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == WANDB_LOG and record.levelno < logging.WARNING:
            return any(text in message for text in WANDB_SHOWN)
        return not any(text in message for text in FILE_ONLY)


def lightning_through_root_logger() -> None:
    """Once logging is set up (Hydra's console and log file on the root logger): Lightning's loggers lose the
    handlers of their own that importing Lightning gives them (on stderr, unfiltered, whatever comes first),
    so their lines go through the root logger's. conf/hydra/default.yaml does the same when Lightning is
    imported before Hydra sets up logging; this is for when it is imported after (train.py imports it late)."""
    if not logging.getLogger().handlers:  # no logging set up: Lightning's own handlers are all there is
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def route_wandb_messages(logger: Any) -> None:
    """Before a wandb logger starts its run: wandb's messages go through logging (``WANDB_LOG``), where
    ConsoleFilter sorts them. WANDB_SILENT=true keeps them all away, as wandb does."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    if not isinstance(logger, WandbLogger) or rank_zero_only.rank != 0:
        return
    import wandb

    if getattr(logger, "_offline", False):
        # What the logger sets as it starts an offline run: set before wandb reads its settings from the
        # environment here, not after (wandb would warn that the environment changed).
        os.environ["WANDB_MODE"] = "dryrun"
    settings = wandb.setup(wandb.Settings(show_info=False, show_warnings=False)).settings
    if not settings.silent:
        wandb.termsetup(settings, logging.getLogger(WANDB_LOG))
