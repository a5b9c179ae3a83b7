#!/usr/bin/env bash
# The §5.3 ablation study and the §5.5 size table on the shipped recipe (docs/worldmodel.md, "Training"),
# at a shorter budget: one training run per row, JOBS rows at a time (default 2) on one torch thread
# each, then one evaluation of every row on the test maps (rollout and counterfactual sections).
#
#   bash scripts/ablation.sh [OUT] [ROW ...]
#
# OUT defaults to runs/ablation. ROWs default to every ablation row: full, trn, spe, lg, fa, od (an
# --ablate name each) and cov (without the coverage prior). The size rows M, L and XL (the full
# model at another --preset; S is the full row) run only when named. STEPS (default 600), SEED
# (default 1) and JOBS come from the environment. Each row trains STEPS steps on data/default
# (generate it first: docs/datasets.md); a row whose OUT/ROW/best exists is not trained again.
# The evaluation goes to OUT/eval-ROW-ROW..., so two drivers sharing OUT do not overwrite it. On
# this 2-core CPU an S row took 11–45 min, M 22 min, L 40 min, XL 98 min.
# DRY_RUN=1 prints the commands instead of running them (a test checks them against docs/worldmodel.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/ablation}
shift || true
ablation_rows=(full trn spe lg fa od cov)
all_rows=("${ablation_rows[@]}" M L XL)
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=("${ablation_rows[@]}")
steps=${STEPS:-600}
seed=${SEED:-1}
jobs=${JOBS:-2}
py=.venv/bin/python
dry=${DRY_RUN:-0}
run() { if [ "$dry" = 1 ]; then echo "$*"; else "$@"; fi; }

train_row() {
    local row=$1 preset=S extra=() cov=(--coverage-prior --coverage-daily-demand --coverage-calibrate 3)
    case $row in  # names checked below, before any training starts
    trn | spe | lg | fa | od) extra=(--ablate "$row") ;;
    cov) cov=() ;;
    M | L | XL) preset=$row ;;
    esac
    [ -d "$out/$row/best" ] && return 0
    run $py -m worldmodel.train --data data/default --out "$out/$row" --preset "$preset" --history 104 \
        --season 96 --horizon 4 --n-chunks 2 --batch-size 8 --max-steps "$steps" \
        --max-minutes 240 --eval-every 150 --eval-batches 12 --threads 1 --pair-weight 2 \
        --season-anchor yesterday --season-actions --memory-age 6 --seed "$seed" --no-progress \
        "${cov[@]}" "${extra[@]}"
}

case $jobs in
'' | *[!0-9]* | 0) echo "JOBS must be a positive integer, got '$jobs'" >&2; exit 2 ;;
esac
for row in "${rows[@]}"; do
    case " ${all_rows[*]} " in
    *" $row "*) ;;
    *) echo "unknown row $row (choose from ${all_rows[*]})" >&2; exit 2 ;;
    esac
done
if [ "$dry" != 1 ]; then
    [ -d data/default ] || { echo "data/default is missing: generate it (docs/datasets.md)" >&2; exit 2; }
    mkdir -p "$out"
fi
pids=()
for row in "${rows[@]}"; do
    if [ "$dry" = 1 ]; then train_row "$row"; continue; fi
    echo "training $row -> $out/$row (log $out/$row.log)"
    train_row "$row" >"$out/$row.log" 2>&1 &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

models=()
for row in "${rows[@]}"; do models+=("$row=$out/$row/best"); done
run $py -m worldmodel.evaluate --data data/default --models "${models[@]}" \
    --sections rollout counterfactual --out "$out/eval-$(IFS=-; echo "${rows[*]}")" --threads 2 \
    --no-progress
