"""Evaluate a checkpoint: `python eval.py ckpt_path=outputs/.../checkpoints/last.ckpt`.

As in train.py, the config is checked before torch and Lightning are imported (vae_lightning.precheck).
"""

import sys

import hydra
from omegaconf import DictConfig

from vae_lightning.errors import VAEUserError
from vae_lightning.precheck import check_eval_config


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        check_eval_config(cfg)  # nothing heavy imported yet
        from vae_lightning.run import evaluate  # torch, Lightning: seconds

        evaluate(cfg)
    except VAEUserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
