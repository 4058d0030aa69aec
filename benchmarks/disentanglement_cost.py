"""What the disentanglement metrics cost against an epoch of dSprites training.

For each network it times training steps of batch 64 on the generated grid (an epoch is the 722,280
training images: 11,286 steps) and one evaluation of the whole metric set with the settings of
`+experiment=dsprites` (`settings`, what each validation computes; `test_settings`, after the test),
and prints each evaluation as a share of an epoch. The weights are those after the timed steps.

    python benchmarks/disentanglement_cost.py [--steps 30] [--models conv64,mlp]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "conv64": ["model=conv64"],
    "mlp": ["model=mlp", "model.encoder.hidden_dims=[256]"],
}


def main() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vae_lightning import VAE
    from vae_lightning.data import DSpritesDataModule
    from vae_lightning.disentanglement import measure

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    grid = DSpritesDataModule(data_dir="/nonexistent", source="generate").ground_truth
    steps_per_epoch = (len(grid) - 5000 - 10000) // 64
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; an epoch is {steps_per_epoch} steps of 64")
    for name in args.models.split(","):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["+experiment=dsprites", *MODELS[name], "paths.data_dir=/nonexistent",
                                              "paths.output_dir=/nonexistent"])
        resolved = OmegaConf.to_container(cfg, resolve=True)
        model = VAE.from_config(resolved, grid.image_shape)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        batches = [grid.sample(64, generator)[0].float() / 255.0 for _ in range(args.steps + 3)]
        for i, x in enumerate(batches):
            if i == 3:
                start = time.perf_counter()
            loss = model(x).loss.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        step = (time.perf_counter() - start) / args.steps
        epoch = step * steps_per_epoch
        print(f"{name}: {step * 1000:.1f} ms a training step, {epoch / 60:.1f} min an epoch")
        callback = resolved["callbacks"]["disentanglement"]
        for which in ("settings", "test_settings"):
            start = time.perf_counter()
            measure(model, grid, 0, callback[which])
            seconds = time.perf_counter() - start
            print(f"  {which}: {seconds:.1f} s, {100 * seconds / epoch:.1f}% of an epoch")


if __name__ == "__main__":
    main()
