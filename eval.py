"""Evaluate a checkpoint: `python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt`."""

import sys

import hydra
from omegaconf import DictConfig

from vae_lightning.errors import VAEUserError
from vae_lightning.run import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except VAEUserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
