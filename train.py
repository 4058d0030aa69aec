"""Train a VAE: `python train.py +experiment=mnist` (Hydra overrides on the command line)."""

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_lightning.checks import check_overrides
from vae_lightning.errors import VAEUserError
from vae_lightning.run import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except VAEUserError as e:
        # A config or data problem the message explains: no traceback (HYDRA_FULL_ERROR=1 shows it).
        print(f"error: {e}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # Hydra marks this job failed and goes on with the others
        sys.exit(2)
    # What a Hydra sweeper optimises.
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])  # keys that moved: name the new one before Hydra rejects the old
    except VAEUserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()
