#!/usr/bin/env bash
# The book's training campaign on a CPU (issue 29): one long constant-rate run, and cooldowns branched from it.
#
#   tools/campaign.sh setup COMMIT           freeze COMMIT of this repository into $CAMPAIGN/code, make its venv
#   tools/campaign.sh setup-cooldown COMMIT  freeze COMMIT into $CAMPAIGN/code-cooldown, the code cooldowns run
#                                            (it must read the main run's checkpoints; cooldowns leave the test
#                                            set alone, --no-test, and the shipped one is scored once)
#   tools/campaign.sh main [THREADS]         start or resume the main run in the background (default 1 thread)
#   tools/campaign.sh cooldown EPOCH N [THREADS]
#                                            branch (or resume) a cooldown of N epochs from the main run's
#                                            snapshot at EPOCH, in the background, into runs/cooldown-EPOCH-N
#   tools/campaign.sh status                 what runs, and the last epoch of every run
#
# Everything lives under $CAMPAIGN (default /work/campaign), outside the checkout, so that other work on the
# checkout cannot disturb it: code/ (a frozen copy of one commit, run from there), venv/, runs/, logs/. Each
# run folder is locked by the process training it, so starting a run twice is refused with one line.
set -euo pipefail

CAMPAIGN=${CAMPAIGN:-/work/campaign}
CODE=$CAMPAIGN/code
COOLDOWN_CODE=$CAMPAIGN/code-cooldown
PYTHON=$CAMPAIGN/venv/bin/python
RUNS=$CAMPAIGN/runs
LOGS=$CAMPAIGN/logs

# The recipe (issue 29 and its probes, tools/probe_recipe.py): SGD with Nesterov momentum at batch 128, a constant
# rate after 5 epochs of warmup (0.1: of the probed 0.01, 0.03 and 0.1 it reached the lowest training loss; all
# three were within 0.6 points of validation accuracy after 5 epochs), weight decay on the blocks' MLP, attention
# output and value weights only, small enough that a weight without gradient keeps exp(-0.78) of itself over 300
# epochs (sum of lr * wd / (1 - momentum) over the steps), clipping at 1.0, which the probe's unclipped norms at
# lr 0.1 passed on 0.6% of the steps after warmup, TrivialAugment, label smoothing 0.1, EMA for validation.
RECIPE=(
    --batch-size 128 --optimizer sgd --momentum 0.9 --nesterov
    --lr 0.1 --warmup-epochs 5 --schedule constant
    --weight-decay 7.5e-6 --decay-scope blocks
    --grad-clip 1.0
    --augment trivialaugment --label-smoothing 0.1 --ema 0.999
    --patience 0 --seed 0
)
MAIN_EPOCHS=300
SNAPSHOT_EVERY=25

data_root() {
    local root=${VIT_TUTORIAL_DATA:-$HOME/.cache/cifar10-jpeg}
    if [ ! -d "$root/train" ]; then
        local archive
        for archive in "$CAMPAIGN/../shared/data/cifar10-jpeg.tar.gz" /work/shared/data/cifar10-jpeg.tar.gz; do
            if [ -f "$archive" ]; then
                mkdir -p "$root" && tar xzf "$archive" -C "$root"
                break
            fi
        done
    fi
    [ -d "$root/train" ] || { echo "campaign: no CIFAR-10 at $root; set VIT_TUTORIAL_DATA" >&2; exit 1; }
    echo "$root"
}

launch() {  # launch CODE NAME ARGS...: train in the background from CODE, niced, appending to logs/NAME.log
    local code=$1 name=$2
    shift 2
    mkdir -p "$LOGS" "$RUNS"
    local out=$RUNS/$name
    if [ -f "$out/.lock" ] && ! flock -n "$out/.lock" true; then
        echo "campaign: $name is already running ($(cat "$out/.lock"))"
        return 0
    fi
    local resume=()
    [ -f "$out/last.pt" ] && resume=(--resume)
    local data
    data=$(data_root)
    echo "=== $(date -u '+%Y-%m-%d %H:%M:%S') UTC: $name on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" \
        >> "$LOGS/$name.log"
    VIT_TUTORIAL_DATA=$data PYTHONPATH=$code setsid nohup nice -n 19 "$PYTHON" -m vit_tutorial train \
        "${RECIPE[@]}" "$@" --out "$out" "${resume[@]}" --no-progress >> "$LOGS/$name.log" 2>&1 < /dev/null &
    echo "campaign: $name started (process $!), log $LOGS/$name.log"
}

case "${1:-status}" in
    setup | setup-cooldown)
        commit=${2:?usage: tools/campaign.sh setup COMMIT}
        target=$CODE
        [ "$1" = setup-cooldown ] && target=$COOLDOWN_CODE
        [ -e "$target" ] && { echo "campaign: $target exists; the campaign's code is frozen" >&2; exit 1; }
        mkdir -p "$target"
        git -C "$(dirname "$0")/.." archive "$commit" | tar -x -C "$target"
        echo "$(git -C "$(dirname "$0")/.." rev-parse "$commit")" > "$target/COMMIT"
        if [ ! -x "$PYTHON" ]; then
            python3 -m venv "$CAMPAIGN/venv"
            "$PYTHON" -m pip install -q torch==2.14.1 torchvision==0.29.1 einops matplotlib numpy pillow tqdm
        fi
        ;;
    main)
        launch "$CODE" main --epochs "$MAIN_EPOCHS" --snapshot-every "$SNAPSHOT_EVERY" --threads "${2:-1}"
        ;;
    cooldown)
        epoch=${2:?usage: tools/campaign.sh cooldown EPOCH N [THREADS]}
        n=${3:?usage: tools/campaign.sh cooldown EPOCH N [THREADS]}
        snapshot=$(printf '%s/main/snapshots/epoch_%04d.pt' "$RUNS" "$epoch")
        [ -f "$snapshot" ] || { echo "campaign: no snapshot $snapshot yet" >&2; exit 1; }
        [ -d "$COOLDOWN_CODE" ] || { echo "campaign: no $COOLDOWN_CODE; run setup-cooldown first" >&2; exit 1; }
        launch "$COOLDOWN_CODE" "cooldown-$epoch-$n" --epochs $((epoch + n)) --cooldown-epochs "$n" \
            --branch-from "$snapshot" --threads "${4:-1}" --no-test
        ;;
    status)
        pgrep -af "vit_tutorial train" || echo "campaign: nothing is training"
        for log in "$LOGS"/*.log; do
            [ -f "$log" ] && echo "$(basename "$log" .log): $(grep '^epoch' "$log" | tail -n 1)"
        done
        ;;
    *)
        sed -n '2,15p' "$0"
        exit 2
        ;;
esac
