#!/usr/bin/env bash
# The GPU half of the step-cost study, in one call of under 8 minutes on one GPU:
#   OUT_DIR/step/        benchmarks/gpu_step.py: the framework against the hand loop and the minimal
#                        LightningModule at batch 128, 512, 2048 and the fastest batch (data on the device),
#                        bf16-mixed, TF32 and compile against fp32, the syncs of unlogged steps (STEP_BUDGET s)
#   OUT_DIR/table/       benchmarks/likelihood_table.py: every likelihood row side by side on the one GPU
#                        (one process each), each trained for TABLE_MINUTES of wall time, then its S = 5000 NLL
#   OUT_DIR/LIKELIHOODS.md  that table, with Burda's four rows against his figures and their order
#
#   VAE_DATA_DIR=<MNIST> benchmarks/gpu_step_and_table.sh OUT_DIR            # on the GPU
#   VAE_DATA_DIR=<MNIST> benchmarks/gpu_step_and_table.sh OUT_DIR --dry-run  # every path on a CPU, tiny (~6 min)
#
# Hydra and omegaconf must import (train.py and eval.py run each row); wandb need not (logger=csv). Each
# part's output is kept if the other fails; the exit status is that of the first failure.
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_step_and_table.sh OUT_DIR [--dry-run]}
DRY=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true
STEP_BUDGET=${STEP_BUDGET:-180}
TABLE_MINUTES=${TABLE_MINUTES:-2.5}
status=0
keep() { local rc=$?; (( status == 0 && rc != 0 )) && status=$rc; return 0; }  # the first failure's status
if [[ $DRY == --dry-run ]]; then
  python3 benchmarks/gpu_step.py --dry-run --out "$OUT/step" > "$OUT/step.log" 2>&1; keep
  python3 benchmarks/likelihood_table.py --rows vae,iwae --parallel 2 --minutes 0.1 --nll-samples 10 \
    --batch-size 100 --out "$OUT/table" --write "$OUT/LIKELIHOODS.md" > "$OUT/table.log" 2>&1; keep
else
  python3 benchmarks/gpu_step.py --out "$OUT/step" --budget-s "$STEP_BUDGET" > "$OUT/step.log" 2>&1; keep
  python3 benchmarks/likelihood_table.py --parallel 10 --minutes "$TABLE_MINUTES" --nll-samples 5000 \
    --batch-size 100 --overrides trainer=gpu --out "$OUT/table" --write "$OUT/LIKELIHOODS.md" \
    > "$OUT/table.log" 2>&1; keep
fi
tail -n 30 "$OUT/step.log" "$OUT/table.log"
exit $status
