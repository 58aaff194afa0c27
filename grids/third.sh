#!/usr/bin/env bash
# Everything the third grid needs in one device command (grids/README.md): unpack the data carried in .data/,
# measure the speed, train the ResNet-18 teacher, train the grid stacked and compiled, score the winner once on
# the test set, and put what to keep under $OUT (at most 8 files of 16 MB). Stops cleanly at its time budget:
# what ran is kept in runs/ and the grid resumes where it stopped.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
BUDGET=${BUDGET:-570}  # seconds for the whole command (the device allows 600)
GRID=${GRID:-gpu-third}
SWEEP=${SWEEP:-runs/gpu-third}
DATA_OPTIONS=${DATA_OPTIONS:-}  # e.g. "--subset 200" for a rehearsal on a CPU
TEACHER_EPOCHS=${TEACHER_EPOCHS:-15}
BENCHMARK=${BENCHMARK:-1}
started=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - started) )); }
mkdir -p "$OUT" /tmp/cifar runs
tar xzf .data/cifar10-jpeg.tar.gz -C /tmp/cifar && export VIT_TUTORIAL_DATA=/tmp/cifar
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
[ "$BENCHMARK" = 1 ] && timeout 90 python3 benchmarks/train_throughput.py --images 45000 --repeats 3 --parallel 8 \
    --json "$OUT/benchmark.json" > "$OUT/benchmark.txt" 2>&1
# shellcheck disable=SC2086
[ -f runs/teacher/best.pt ] || timeout "$(left)" python3 -m vit_tutorial train --model resnet --out runs/teacher \
    --epochs "$TEACHER_EPOCHS" --warmup-epochs 1 --lr 0.1 --batch-size 512 --patience 0 --compile --no-progress \
    $DATA_OPTIONS > "$OUT/teacher.txt" 2>&1
# shellcheck disable=SC2086
timeout --signal=TERM "$(( $(left) - 30 ))" python3 -m vit_tutorial sweep "$GRID" --out "$SWEEP" \
    --stack --compile $DATA_OPTIONS > "$OUT/sweep.txt" 2>&1
cp "$SWEEP/results.json" "$SWEEP/results.md" "$OUT/" 2>/dev/null
if [ -f "$SWEEP/winner.pt" ]; then
    # shellcheck disable=SC2086
    python3 -m vit_tutorial evaluate --checkpoint "$SWEEP/winner.pt" --metrics "$OUT/winner-metrics.json" \
        $DATA_OPTIONS >> "$OUT/sweep.txt" 2>&1
    cp "$SWEEP/winner.pt" "$OUT/winner.pt"
fi
echo "done in $(( $(date +%s) - started )) s" >> "$OUT/sweep.txt"
