#!/usr/bin/env bash
# The second generation's training run, started or continued: one train.py run over the task mix
# (tasks.py) with 8 experts per sparse layer (the shape switch_experiment.sh measured best per CPU
# second), checkpointed every 10 minutes. Rerun the script to continue it (train.py --resume
# replays the same optimizer state, schedule and data stream, so stretches give the same model as
# one uninterrupted run); when it has finished, the script does nothing.
#
#   PYTHON=.venv/bin/python tools/model/train_gen2.sh [MINUTES]
#
# MINUTES: stop (with a checkpoint) after this many minutes of this stretch (default: run to the end).
# Environment: THREADS (torch threads, default 1), RUN (default tools/model/work/gen2).
# tools/model/work may be a symlink to a directory outside the checkout, so that a run outlives
# a fresh clone (e.g. ln -sfn ~/.cache/switchscope/model-work tools/model/work).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WORK=tools/model/work
RUN=${RUN:-$WORK/gen2}
THREADS=${THREADS:-1}
STOP=()
[ -n "${1:-}" ] && STOP=(--stop-after-minutes "$1")
export OMP_NUM_THREADS=$THREADS
# The shipped run: a cosine schedule planned over 24 M tokens, cut by a deadline into a linear
# cool-down from step 2,372 over 296 steps (train.py --deadline; replayed here exactly), 2,668
# steps, about 19 M tokens on one CPU thread.
RECIPE="--task mix --experts 8 --tokens 24000000 --batch-tokens 8192 --span-share 0.3 --label-smoothing 0.1
        --lr 2e-2 --warmup 200 --optimizer adamw-rms --router-aux-coef 0.01 --eval-every 500
        --cooldown-at 2372 --cooldown-steps 296"

if [ -f "$RUN/train_info.json" ]; then
  echo "$RUN has finished ($RUN/train_info.json)"
elif [ -f "$RUN/checkpoint.pt" ]; then
  $PYTHON tools/model/train.py --resume "$RUN" --threads "$THREADS" "${STOP[@]}"
else
  # shellcheck disable=SC2086
  $PYTHON tools/model/train.py --work "$WORK" --out "$RUN" --threads "$THREADS" $RECIPE "${STOP[@]}"
fi
