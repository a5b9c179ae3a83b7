#!/usr/bin/env bash
# Table 1 against learned world models (docs/worldmodel.md, "Baseline world models"): trains every
# baseline row on data/default with MobiWM's budget (1,500 steps of 8 maps, validation every 150
# steps, the best kept), one after the other on two torch threads, then evaluates them beside the
# shipped full MobiWM and the copies of the past on 12 held-out maps per scenario (data/test12).
#
#   bash scripts/table1.sh [OUT] [ROW ...]
#
# OUT defaults to runs. ROWs default to every baseline: static (Static-MobiWM: the shipped MobiWM
# recipe, daily memory included, without the actions and the parts that read them), gru,
# itransformer, rssm, tdmpc (worldmodel.train --arch NAME, their default configs).
# A row whose OUT/<row>-wm/best (static: OUT/static-mobiwm/best) exists is not trained again.
# SEED (default 0) comes from the environment; EVAL_OUT (default OUT/eval-table1) names the
# evaluation folder. Generate data/default and data/test12 first (docs/datasets.md). On the 2-core
# CPU a row trained in 0.6 (GRU) to 18 min (Static-MobiWM), the evaluation in 4 min (docs/results.md).
# DRY_RUN=1 prints the commands instead of running them (a test checks them).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs}
shift || true
all_rows=(static gru itransformer rssm tdmpc)
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=("${all_rows[@]}")
seed=${SEED:-0}
eval_out=${EVAL_OUT:-$out/eval-table1}
py=.venv/bin/python
dry=${DRY_RUN:-0}
run() { if [ "$dry" = 1 ]; then echo "$*"; else "$@"; fi; }

folder() { if [ "$1" = static ]; then echo "$out/static-mobiwm"; else echo "$out/$1-wm"; fi; }

train_row() {
    local row=$1 arch=()
    if [ "$row" = static ]; then  # the shipped MobiWM recipe without what reads the actions
        arch=(--preset S --ablate actions --history 104 --season 96 --season-anchor yesterday
            --memory-age 6 --pair-weight 2)
    else
        arch=(--arch "$row")
    fi
    [ -d "$(folder "$row")/best" ] && return 0
    run $py -m worldmodel.train --data data/default --out "$(folder "$row")" "${arch[@]}" \
        --max-steps 1500 --eval-every 150 --eval-batches 12 --threads 2 --seed "$seed" --no-progress
}

for row in "${rows[@]}"; do
    case " ${all_rows[*]} " in
    *" $row "*) ;;
    *) echo "unknown row $row (choose from ${all_rows[*]})" >&2; exit 2 ;;
    esac
done
if [ "$dry" != 1 ]; then
    for d in data/default data/test12; do
        [ -d "$d" ] || { echo "$d is missing: generate it (docs/datasets.md)" >&2; exit 2; }
    done
fi
for row in "${rows[@]}"; do train_row "$row"; done

models=(full=mobiwm_env/assets/mobiwm-full)
for row in "${rows[@]}"; do models+=("$row=$(folder "$row")/best"); done
run $py -m worldmodel.evaluate --data data/test12 --models "${models[@]}" persistence seasonal \
    --sections rollout counterfactual --out "$eval_out" --threads 2 --no-progress
