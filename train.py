"""Train a VAE: `python train.py +experiment=mnist` (Hydra overrides on the command line).

Hydra composes the config, vae_lightning.precheck checks what it can without torch, and only then are
torch, Lightning and the trackers imported (seconds): a config mistake is reported in about a second.
"""

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_lightning.errors import VAEUserError
from vae_lightning.precheck import check_overrides, check_train_config, debug_last

log = logging.getLogger("vae_lightning")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        check_train_config(cfg)  # nothing heavy imported yet, nothing made but Hydra's run directory
        from vae_lightning.run import train  # torch, Lightning, the trackers: seconds

        metrics = train(cfg)
    except VAEUserError as e:
        # A config or data problem the message explains: no traceback (HYDRA_FULL_ERROR=1 shows it).
        print(f"error: {e}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # Hydra marks this job failed and goes on with the others
        sys.exit(2)
    # What a Hydra sweeper optimises.
    metric = cfg.get("optimized_metric")
    if metric and metrics.get(metric) is None:
        why = " (trainer.fast_dev_run saves no checkpoint)" if cfg.trainer.get("fast_dev_run") else ""
        log.warning(f"optimized_metric={metric} was not measured in this run{why}: a sweeper gets None.")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])  # keys that moved: name the new one before Hydra rejects the old
    except VAEUserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = debug_last(sys.argv[1:])  # debug=NAME after +experiment=..., so that it wins (precheck.py)
    main()
