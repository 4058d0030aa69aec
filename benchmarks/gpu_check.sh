#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and PyTorch, in under 9 minutes, writes under OUT_DIR
#   gpu_tests.txt                the GPU part of the test suite (pytest -m gpu)
#   speed_128.{md,json}          benchmarks/epoch_speed.py at batch 128: framework against hand-written loops
#   speed_sweep_<B>.json         the framework's images/s at larger batches
#   speed_best.{md,json}         all six ways (fp32, bf16-mixed, compile) at the fastest batch
#   burda/                       a +experiment=burda IWAE (k = 50) run limited to BURDA_SECONDS of training
#   burda_eval/eval_metrics.json its test NLL with S = 5000, and the time it took
#   summary.txt                  the figures in one place
#
#   benchmarks/gpu_check.sh OUT_DIR                 # on the GPU
#   benchmarks/gpu_check.sh OUT_DIR --device cpu    # the same steps on the CPU with a minute's budget
#
# Needs VAE_DATA_DIR pointing at MNIST (MNIST/raw/*). Each step's output is kept even if a later
# one fails; the exit status is that of the first failure.
set -uo pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--device cpu]}
DEVICE=cuda
[[ "${2:-}" == "--device" ]] && DEVICE=${3:?}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true HYDRA_FULL_ERROR=0
status=0
step() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
fail() { echo "   failed: $*" | tee -a "$OUT/summary.txt"; [[ $status == 0 ]] && status=1; }

if [[ $DEVICE == cuda ]]; then
  TRAINER=gpu; SWEEP="1024 4096 16384"; BURDA_SECONDS=300; BURDA_BATCH=1000; BURDA_LR=0.003; NLL_S=5000
  SPEED_EPOCHS=3; TEST_LIMIT=""; DRY=""; DRY_PROBE=""
else  # the dry run: every step, tiny (5,000 training images for the speed runs)
  TRAINER=cpu; SWEEP="512"; BURDA_SECONDS=10; BURDA_BATCH=500; BURDA_LR=0.003; NLL_S=20
  SPEED_EPOCHS=2; TEST_LIMIT="trainer.limit_test_batches=1"; export VAE_BENCH_IMAGES=5000
  DRY="trainer.limit_train_batches=5 trainer.limit_val_batches=1"; DRY_PROBE="trainer.limit_train_batches=5"
fi
MAX_TIME=$(python -c "s=$BURDA_SECONDS; print(f'00:{s//3600:02d}:{s%3600//60:02d}:{s%60:02d}')")
python - <<EOF | tee -a "$OUT/summary.txt"
import torch
print("torch", torch.__version__, "| CUDA", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF

step "1. GPU tests (pytest -m gpu)"
timeout 240 python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1 \
  || fail "GPU tests (see gpu_tests.txt)"
tail -3 "$OUT/gpu_tests.txt" | tee -a "$OUT/summary.txt"

step "2. speed at batch 128"
timeout 150 python benchmarks/epoch_speed.py --device "$DEVICE" --batch-size 128 --epochs "$SPEED_EPOCHS" --rounds 1 \
  --ways abcd --write "$OUT/speed_128.md" --json "$OUT/speed_128.json" > "$OUT/speed_128.log" 2>&1 \
  || fail "speed at batch 128 (see speed_128.log)"
grep -E "^\| \(|Ratios" "$OUT/speed_128.md" | tee -a "$OUT/summary.txt"

step "3. the batch size that maximises the framework's throughput: $SWEEP"
best=128; best_rate=0
for b in $SWEEP; do
  timeout 90 python benchmarks/epoch_speed.py --device "$DEVICE" --batch-size "$b" --epochs "$SPEED_EPOCHS" --rounds 1 \
    --ways abc --json "$OUT/speed_sweep_$b.json" > "$OUT/speed_sweep_$b.log" 2>&1 || { fail "batch $b"; continue; }
  rate=$(python -c "import json; print(int(json.load(open('$OUT/speed_sweep_$b.json'))['ways']['a']['images_per_s']))")
  echo "   batch $b: framework $rate images/s" | tee -a "$OUT/summary.txt"
  if (( rate > best_rate )); then best=$b; best_rate=$rate; fi
done

step "4. all ways at batch $best (fp32, fused Adam, compile, bf16-mixed)"
timeout 180 python benchmarks/epoch_speed.py --device "$DEVICE" --batch-size "$best" --epochs "$SPEED_EPOCHS" --rounds 1 \
  --ways abcdef --write "$OUT/speed_best.md" --json "$OUT/speed_best.json" > "$OUT/speed_best.log" 2>&1 \
  || fail "speed at batch $best (see speed_best.log)"
grep -E "^\| \(|Ratios|ELBO" "$OUT/speed_best.md" | tee -a "$OUT/summary.txt"

step "5. Burda's IWAE (k = 50) for ${BURDA_SECONDS} s of training, batch $BURDA_BATCH, lr $BURDA_LR"
# The lr schedule needs a length: the epochs that fit the time, from one measured epoch.
probe=$(timeout 120 python train.py +experiment=burda trainer=$TRAINER logger=csv data.batch_size=$BURDA_BATCH \
  trainer.max_epochs=2 trainer.limit_val_batches=0 test=false callbacks.rich_progress_bar=null $DRY_PROBE \
  callbacks.image_logger=null hydra.run.dir="$OUT/burda_probe" 2>&1 | grep -oE "epoch 2/2 .*\(([0-9.]+) s\)" \
  | grep -oE "[0-9.]+ s\)" | grep -oE "[0-9.]+")
epochs=$(python -c "print(max(2, int($BURDA_SECONDS / max(float('${probe:-1}'), 1e-3))))")
echo "   one epoch: ${probe:-?} s -> max_epochs=$epochs" | tee -a "$OUT/summary.txt"
start=$(date +%s)
timeout $((BURDA_SECONDS + 120)) python train.py +experiment=burda trainer=$TRAINER logger=csv \
  data.batch_size=$BURDA_BATCH model.optimizer.lr=$BURDA_LR model/lr_scheduler=cosine \
  trainer.max_epochs="$epochs" trainer.max_time="$MAX_TIME" callbacks.rich_progress_bar=null \
  callbacks.image_logger.every_n_epochs=0 $TEST_LIMIT $DRY hydra.run.dir="$OUT/burda" > "$OUT/burda.log" 2>&1 \
  || fail "Burda run (see burda.log)"
echo "   trained and tested in $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
grep -E "test metrics" "$OUT/burda.log" | tail -1 | tee -a "$OUT/summary.txt"

step "6. its test NLL with S = $NLL_S"
timeout 240 python eval.py ckpt_path="$OUT/burda/checkpoints/last.ckpt" nll_samples=$NLL_S num_samples=50 \
  trainer.accelerator=$([[ $DEVICE == cuda ]] && echo gpu || echo cpu) $TEST_LIMIT \
  hydra.run.dir="$OUT/burda_eval" > "$OUT/burda_eval.log" 2>&1 || fail "NLL evaluation (see burda_eval.log)"
python - "$OUT/burda_eval/eval_metrics.json" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
try:
    m = json.load(open(sys.argv[1]))
    print(f"   test NLL {m['test/nll']:.2f} nats (S = {m['nll_samples']}), IWAE k=50 {m['test/iwae']:.2f}, "
          f"evaluated in {m['seconds']:.0f} s")
except (OSError, KeyError) as e:
    print(f"   no evaluation figures: {e}")
EOF
step "done (status $status)"
exit $status
