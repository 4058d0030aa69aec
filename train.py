"""Train a VAE: `python train.py +experiment=mnist` (Hydra overrides on the command line)."""

import sys

import hydra
from omegaconf import DictConfig

from vae_lightning.errors import VAEUserError
from vae_lightning.run import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except VAEUserError as e:
        # A config or data problem the message explains: no traceback.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    # What a Hydra sweeper optimises.
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
