#!/usr/bin/env bash
# The default weights' recipe on one GPU, in one call: weights v8's campaign (config/train_v7_360.yaml,
# 360x480 crops, points placed as inference places them, weights v5 as the teacher) with 16 pairs a step
# instead of 2, from the shipped weights, for SECONDS_TRAIN seconds (default 420); the snapshots chosen by
# usp-select on Oxford and HPatches; the chosen one evaluated with ORB and SIFT at both protocol settings.
# About 10 minutes on one H100. Leaves in $OUT:
#   run/                    train.log, metrics.jsonl, config.yaml, last.pt, snapshots/step_N.pt
#   select.txt, select.json every snapshot's figures and the choice
#   unsuperpoint.pt         the chosen snapshot as fp16 weights (usp_core/weights format)
#   eval_<set>_<size>.txt/.json   usp-eval of it beside ORB and SIFT
#
#   OUT=$OUT DATA=gpu_data/train EVAL=gpu_data/eval scripts/train_gpu.sh
#
# Installs nothing: it runs usp_core from this checkout (PYTHONPATH) with the interpreter's torch,
# OpenCV, PyYAML and tqdm (the lent GPU machine has them and reaches no registry). That machine gets
# the checkout without ../shared: copy the photos and eval sets into an ignored folder and carry it
# (docs/training.md, "The GPU path"). TINY=1 runs the same steps at a toy size on any device: the
# test suite runs it on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the output folder}
DATA=${DATA:-../shared/data/train}
EVAL=${EVAL:-../shared/data/eval}
PYTHON=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"

if [ -n "${TINY:-}" ]; then
  TRAIN=(--set "image_size=[32,48]" --batch-size 2 --steps 4 --num-workers 0 --set snapshot_interval=2
         --set val_interval=2 --set val_batches=1 --set checkpoint_interval=2 --set log_interval=1)
  SECONDS_TRAIN=${SECONDS_TRAIN:-120}
  SETTINGS=("64x96:50")
else
  TRAIN=(--batch-size 16 --steps 3000 --num-workers 8 --set snapshot_interval=250
         --set val_interval=250 --set checkpoint_interval=250)
  SECONDS_TRAIN=${SECONDS_TRAIN:-420}
  SETTINGS=("240x320:300" "480x640:1000")
fi

"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
"$PYTHON" -m usp_core.cli.train --config config/train_v7_360.yaml "${TRAIN[@]}" --init unsuperpoint --data "$DATA" \
  --out "$OUT/run" --device auto --time-limit "$SECONDS_TRAIN"
"$PYTHON" -m usp_core.cli.select "$OUT/run" --data "$EVAL/oxford,$EVAL/hpatches" --device auto \
  --resolution "${SETTINGS[0]%%:*}" --top-k "${SETTINGS[0]##*:}" --json "$OUT/select.json" \
  --export "$OUT/unsuperpoint.pt" | tee "$OUT/select.txt"
for setting in "${SETTINGS[@]}"; do
  for set in oxford hpatches; do
    name="$OUT/eval_${set}_${setting%%:*}"
    "$PYTHON" -m usp_core.cli.eval "$EVAL/$set" --methods usp,orb,sift --weights "$OUT/unsuperpoint.pt" \
      --backend torch --resolution "${setting%%:*}" --top-k "${setting##*:}" --json "$name.json" | tee "$name.txt"
  done
done
