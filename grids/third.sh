#!/usr/bin/env bash
# Everything the third grid needs in one device command (grids/README.md): unpack the data carried in .data/,
# measure the speed, train the ResNet-18 teacher, train the grid stacked and compiled, score the winner once on
# the test set, and put what to keep under $OUT: log.txt, benchmark.json, benchmark.txt, results.json,
# results.md, winner-metrics.json and winner.pt (7 files; the device returns at most 8 of 16 MB). Stops
# cleanly at its time budget: what ran is kept in runs/, and a re-run on the same machine resumes it.
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
log() { echo "[$(( $(date +%s) - started )) s] $*" >> "$OUT/log.txt"; }
mkdir -p "$OUT" /tmp/cifar runs
tar xzf .data/cifar10-jpeg.tar.gz -C /tmp/cifar && export VIT_TUTORIAL_DATA=/tmp/cifar
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/log.txt" 2>&1
log "data unpacked"
# the benchmark writes its JSON after every comparison: what it measured in its 75 s comes back
if [ "$BENCHMARK" = 1 ]; then
    timeout 75 python3 benchmarks/train_throughput.py --images 45000 --repeats 2 --parallel 6 \
        --json "$OUT/benchmark.json" > "$OUT/benchmark.txt" 2>&1
    rm -f "$OUT/benchmark.md"  # the same table as the JSON
    log "benchmark ended"
fi
if [ ! -f runs/teacher/metrics.json ]; then
    resume=""; [ -f runs/teacher/last.pt ] && resume="--resume"
    # shellcheck disable=SC2086
    timeout 150 python3 -m vit_tutorial train --model resnet --out runs/teacher $resume \
        --epochs "$TEACHER_EPOCHS" --warmup-epochs 1 --lr 0.1 --batch-size 512 --patience 0 --compile \
        --no-progress $DATA_OPTIONS >> "$OUT/log.txt" 2>&1
    log "teacher ended (exit $?)"
fi
# shellcheck disable=SC2086
timeout --signal=TERM "$(( $(left) - 30 ))" python3 -m vit_tutorial sweep "$GRID" --out "$SWEEP" \
    --stack --compile $DATA_OPTIONS >> "$OUT/log.txt" 2>&1
log "sweep ended (exit $?)"
cp "$SWEEP/results.json" "$SWEEP/results.md" "$OUT/" 2>/dev/null
if [ -f "$SWEEP/winner.pt" ]; then
    # shellcheck disable=SC2086
    python3 -m vit_tutorial evaluate --checkpoint "$SWEEP/winner.pt" --metrics "$OUT/winner-metrics.json" \
        $DATA_OPTIONS >> "$OUT/log.txt" 2>&1
    cp "$SWEEP/winner.pt" "$OUT/winner.pt"
fi
log "done"
