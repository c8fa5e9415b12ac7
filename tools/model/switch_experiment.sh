#!/usr/bin/env bash
# Does a Switch layer pay at our size? A dense model of the same active size, 8 experts and 32
# experts per sparse layer (upcycled from the 8-expert run halfway: train.py --upcycle-from), on the
# same data (same seed, same task mix) and the same budget of CPU seconds on one thread each, then
# the plot of held-out loss against CPU time and against tokens (plot_switch.py).
#
#   PYTHON=.venv/bin/python tools/model/switch_experiment.sh [OUT]
#
# Needs the corpus and tokenizer (fetch_corpus.py, train_tokenizer.py). Runs are resumable: rerun
# the script and each one continues from its checkpoint (or is skipped when it has finished).
# Environment: BUDGET (CPU seconds per model, default 1500), PLOTS (where the plot goes).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WORK=tools/model/work
OUT=${1:-$WORK/switch}
BUDGET=${BUDGET:-1500}
PLOTS=${PLOTS:-$OUT}
HALF=$((BUDGET / 2))
COMMON="--work $WORK --task mix --threads 1 --cpu-budget $BUDGET --batch-tokens 4096 --warmup 100 --eval-every 100 --lr 2e-2"
export OMP_NUM_THREADS=1

# train DIR ARGS...: a run from its start, or its continuation when DIR has a checkpoint
train() {
  local dir=$1
  shift
  if [ -f "$dir/train_info.json" ]; then
    return 0
  elif [ -f "$dir/checkpoint.pt" ]; then
    $PYTHON tools/model/train.py --resume "$dir" --threads 1
  else
    # shellcheck disable=SC2086
    $PYTHON tools/model/train.py $COMMON --out "$dir" "$@"
  fi
}

train "$OUT/dense" --experts 1 &
dense=$!
# the 8-expert run stops halfway, where the 32-expert run branches off, then goes on
if [ ! -f "$OUT/e8-half/checkpoint.pt" ]; then
  # shellcheck disable=SC2086
  [ -f "$OUT/e8/checkpoint.pt" ] || $PYTHON tools/model/train.py $COMMON --experts 8 --out "$OUT/e8" --stop-at-cpu "$HALF"
  mkdir -p "$OUT/e8-half"
  cp "$OUT/e8/checkpoint.pt" "$OUT/e8-half/checkpoint.pt"
fi
train "$OUT/e8" --experts 8
# shellcheck disable=SC2086
train "$OUT/e32" --upcycle-from "$OUT/e8-half" --upcycle-factor 4
wait $dense
$PYTHON tools/model/plot_switch.py --runs "$OUT" --out "$PLOTS"
