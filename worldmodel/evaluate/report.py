"""The Markdown report: shared table helpers and one render function per part.

Every ``render_*`` returns Markdown lines; traffic is in the dataset's unit per 15-min slot.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from worldmodel.evaluate.counterfactual import PLAN_KINDS
from worldmodel.evaluate.lead import LEAD_BANDS, lead_bands
from worldmodel.evaluate.rollout import JSD_TARGET_PCT


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 10**digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _ranked(values: list[float | None], lower_better: bool = True) -> list[str]:
    """Format a column, **bold** best and <u>underlined</u> second best."""
    ok = [
        (v if lower_better else -v, i)
        for i, v in enumerate(values)
        if v is not None and math.isfinite(v)
    ]
    order = [i for _, i in sorted(ok)]
    out = [_fmt(v) for v in values]
    if len(order) > 1:
        out[order[0]] = f"**{out[order[0]]}**"
        if len(order) > 2:
            out[order[1]] = f"<u>{out[order[1]]}</u>"
    return out


def render_header(results: dict[str, Any]) -> list[str]:
    """Title, run configuration and the table of models."""
    cfg = results["config"]
    unit = cfg.get("traffic_unit", "?")
    return [
        "# World-model evaluation",
        "",
        f"data `{cfg['data']}`, split `{cfg['split']}`, {cfg['n_maps']} maps, "
        f"quick={cfg['quick']}, seed {cfg['seed']}; traffic in {unit} per slot.",
        "",
        _table(
            ["Model", "kind", "H", "P", "parameters", "spec"],
            [
                [
                    n,
                    i["kind"],
                    str(i["history"]),
                    str(i["horizon"]),
                    f"{i['n_parameters']:,}",
                    f"`{i['spec']}`",
                ]
                for n, i in results["models"].items()
            ],
        ),
    ]


def render_summary(results: dict[str, Any], names: list[str]) -> list[str]:
    """One line per model (ablation / size tables): parameters, pooled rollout JSD and MAE,
    counterfactual R² of the random, overpower and site-off-neighbour plans."""
    ro, cf = results.get("rollout") or {}, results.get("counterfactual") or {}
    overall = ro.get("overall") or {}
    if not overall and not cf:
        return []

    def r2(n: str, kind: str, sel: str) -> float | None:
        block = (cf.get("metrics") or {}).get(n, {}).get(kind)
        return None if not block or not block.get(sel) else block[sel]["r2"]

    cols = [
        [f"{results['models'][n]['n_parameters']:,}" for n in names],
        _ranked([(overall.get(n) or {}).get("jsd") for n in names]),
        _ranked([(overall.get(n) or {}).get("mae") for n in names]),
        _ranked([r2(n, "random", "all") for n in names], lower_better=False),
        _ranked([r2(n, "overpower", "all") for n in names], lower_better=False),
        _ranked([r2(n, "site_off", "on") for n in names], lower_better=False),
    ]
    header = ["Model", "parameters", "pooled JSD", "pooled MAE", "random R²", "overpower R²"]
    return [
        "",
        "## Summary",
        "",
        "Rollout metrics pooled over all scenarios (section 1); counterfactual R² of the "
        "per-cell deltas (section 2; site-off: the neighbours of the switched-off site).",
        "",
        _table(
            header + ["site-off R² (on)"],
            [[n] + [c[i] for c in cols] for i, n in enumerate(names)],
        ),
    ]


_summary = render_summary  # its name in the single-file module


def _improvement_tables(ro: dict[str, Any], scen: list[str], key: str, what: str) -> list[str]:
    """MobiWM's JSD improvement over the best ``what`` and its jackknife interval."""
    md: list[str] = []
    imp = ro.get(f"improvement_jsd{key}_pct")
    if not imp:
        return md
    md += ["", f"JSD improvement over the best {what} (%, positive = better):", ""]
    rows = []
    for n, per in imp.items():
        rows.append(
            [n]
            + [
                "–"
                if per[s] is None or per[s]["pct"] is None
                else f"{per[s]['pct']:+.1f} (vs {per[s]['best_baseline']})"
                for s in scen
            ]
        )
    md.append(_table(["Model"] + scen, rows))
    jk = ro.get(f"improvement_jsd{key}_jackknife")
    if jk and any(jk.values()):
        md += [
            "",
            "How much that improvement depends on the maps drawn: leave-one-map-out "
            "jackknife, 90% interval (point ± 1.645·se) and, in brackets, the lowest value "
            f"with one map left out (%; the target is {JSD_TARGET_PCT:g}):",
            "",
        ]
        rows = [
            [n]
            + [
                f"{per[s]['lo90']:+.1f} … {per[s]['hi90']:+.1f} "
                f"[{per[s]['min_leave_one_out']:+.1f}]"
                if s in per
                else "–"
                for s in scen
            ]
            for n, per in jk.items()
        ]
        md.append(_table(["Model"] + scen, rows))
    return md


def render_rollout(ro: dict[str, Any], names: list[str], unit: str) -> list[str]:
    """Section 1: Table 1 layout, JSD improvement (+ jackknife), per-map JSD, pooled metrics,
    total-traffic bias and MAE per rollout day."""
    scen = list(ro["metrics"])
    md = [
        "",
        "## 1. Long-horizon rollout (Table 1 layout)",
        "",
        f"Warm start on the first {ro['warm_start']} true slots, then autoregressive with "
        "the true actions; metrics over active cells pooled over each scenario's maps "
        f"(MAE in {unit}). Predicted slots: "
        + ", ".join(f"{s} {n}" for s, n in ro["slots"].items())
        + ". **bold** best, <u>underlined</u> second.",
        "",
    ]
    header = ["Model"] + [f"{s} {k}" for s in scen for k in ("JSD", "MAE", "NRMSE")]
    cols = [
        _ranked([ro["metrics"][s][n][k] for n in names])
        for s in scen
        for k in ("jsd", "mae", "nrmse")
    ]
    md.append(_table(header, [[n] + [c[i] for c in cols] for i, n in enumerate(names)]))
    for key, what in (("", "baseline"), ("_learned", "learned baseline")):
        md += _improvement_tables(ro, scen, key, what)
    per_map = ro.get("jsd_per_map")
    if per_map:
        md += [
            "",
            "JSD of each map on its own (its own bins), mean over the scenario's maps (the "
            "table above pools the maps, where errors of opposite sign in two maps cancel):",
            "",
        ]
        cols = [_ranked([float(np.mean(per_map[s][n])) for n in names]) for s in scen]
        md.append(
            _table(["Model"] + scen, [[n] + [c[i] for c in cols] for i, n in enumerate(names)])
        )
    if ro["overall"]:
        md += ["", "All scenarios pooled:", ""]
        keys = ("jsd", "mae", "rmse", "nrmse")
        cols = [_ranked([ro["overall"][n][k] for n in names]) for k in keys]
        md.append(
            _table(
                ["Model", "JSD", "MAE", "RMSE", "NRMSE"],
                [[n] + [c[i] for c in cols] for i, n in enumerate(names)],
            )
        )
    if all("bias_pct" in ro["metrics"][s][n] for s in scen for n in names):
        md += [
            "",
            "Total-traffic bias (%, + = over-predicts; `metrics.bias_pct`), a level error "
            "that pooling maps does not cancel:",
            "",
        ]
        rows = [
            [n] + [f"{ro['metrics'][s][n]['bias_pct']:+.2f}" for s in scen]
            + [f"{ro['overall'][n]['bias_pct']:+.2f}"]
            for n in names
        ]  # fmt: skip
        md.append(_table(["Model", *scen, "pooled"], rows))
    if ro["mae_by_day"]:
        n_days = max(len(v) for v in ro["mae_by_day"].values())
        md += ["", f"MAE by rollout day ({unit}, all scenarios):", ""]
        rows = [[n] + [_fmt(v) for v in ro["mae_by_day"][n]] for n in names]
        md.append(_table(["Model"] + [f"day {d + 1}" for d in range(n_days)], rows))
    for s, why in ro.get("skipped", {}).items():
        md.append(f"\n*{s} skipped: {why}.*")
    return md


def render_counterfactual(cf: dict[str, Any], names: list[str], unit: str) -> list[str]:
    """Section 2: twin effect size, then R² and sign agreement per plan kind."""
    tw = cf["twin"]
    md = [
        "",
        "## 2. Counterfactual fidelity",
        "",
        f"{len(cf['maps'])} maps, plans held for {cf['horizon']} slots from a weekday "
        f"08:00 ({cf['n_random_plans']} random plans per map). Per-cell delta = mean traffic "
        "under the plan − under no change; R² (`delta_r2`) and sign agreement (tol = 1 % of "
        "the mean cell traffic) pooled over cells and maps. `all`: cells active under "
        "either plan; `on`: cells active under the plan (site_off: the neighbours).",
        "",
        "Twin effect size, mean |Δ| per cell ("
        + ", ".join(f"{k} {_fmt(v)}" for k, v in tw["mean_abs_delta"].items())
        + f") vs mean cell traffic {_fmt(tw['mean_cell_traffic'])} {unit}; no-change "
        f"replicate max |Δ| = {_fmt(tw['replicate_max_abs_delta'])}.",
        "",
    ]
    header = ["Model"]
    keys = []
    for kind in PLAN_KINDS:
        for sel in ("all", "on"):
            if kind != "site_off" and sel == "on":
                continue
            suffix = "" if sel == "all" else " (on)"
            header += [f"{kind} R²{suffix}", f"{kind} sign{suffix}"]
            keys += [(kind, sel, "r2"), (kind, sel, "sign")]

    def val(n: str, kind: str, sel: str, k: str) -> float | None:
        block = cf["metrics"][n].get(kind)
        return None if not block or not block.get(sel) else block[sel][k]

    cols = [_ranked([val(n, *key) for n in names], lower_better=False) for key in keys]
    md.append(_table(header, [[n] + [c[i] for c in cols] for i, n in enumerate(names)]))
    rer = [v["rerun_max_abs_diff"] for v in cf["maps"].values()]
    if rer:
        md.append(f"\nTwin re-run vs dataset before t0: max |diff| {_fmt(max(rer))} {unit}.")
    return md


def render_stability(st: dict[str, Any], names: list[str], unit: str) -> list[str]:
    """Section 3: one row per checkpoint model (``names`` and ``unit`` are unused)."""
    md = [
        "",
        "## 3. Rollout stability",
        "",
        f"{st['slots']}-slot rollout on `{st['map']}` ({st['scenario']}); totals are the "
        "map's traffic per slot, ratios relative to the twin's min / max total over the "
        "map's week; drift = mean total of the last period / first period.",
        "",
    ]
    rows = []
    for n, s in st["metrics"].items():
        rows.append(
            [
                n,
                _fmt(s["any_nan"]),
                _fmt(s["any_negative"]),
                _fmt(s["min_ratio"]),
                _fmt(s["max_ratio"]),
                _fmt(s["share_out_of_range"]),
                _fmt(s["drift"]),
                _fmt(s["first_period_vs_twin_mean"]),
            ]
        )
    md.append(
        _table(
            [
                "Model",
                "NaN",
                "negative",
                "min / twin min",
                "max / twin max",
                "share outside [0.5 min, 1.5 max]",
                "drift last/first",
                "first period / twin mean",
            ],
            rows,
        )
    )
    if not rows:
        md.append("\n*No checkpoint model: naive baselines are stable by construction.*")
    return md


def render_lead(ld: dict[str, Any], names: list[str], unit: str) -> list[str]:
    """Section 4: MAE per band of lead times (``LEAD_BANDS`` up to the longest lead)."""
    bands = [b for b in LEAD_BANDS if b[1] <= ld["lead_slots"]]
    md = [
        "",
        "## 4. Error by lead time",
        "",
        f"MAE ({unit}) by slots since the last true slot, from {len(ld['origins'])} "
        "forecast origins per map (every hour of a day), pooled over maps and scenarios; "
        "the first band is one chunk from the true history (teacher forcing).",
        "",
    ]
    shown = [n for n in names if n in ld["overall"]]
    if shown:
        curves = [lead_bands(ld["overall"][n], bands) for n in shown]
        cols = [_ranked(list(c)) for c in zip(*curves, strict=True)]
        md.append(
            _table(
                ["Model"] + [f"lead {lo}–{hi}" for lo, hi in bands],
                [[n] + [c[i] for c in cols] for i, n in enumerate(shown)],
            )
        )
    for s, why in ld.get("skipped", {}).items():
        md.append(f"\n*{s} skipped: {why}.*")
    return md


def render_seconds(results: dict[str, Any]) -> list[str]:
    """The wall time of every section (and ``total`` from the CLI)."""
    md: list[str] = []
    secs = results.get("seconds", {})
    if secs:
        md += ["", "Wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()) + "."]
    return md


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python, non-finite floats → None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
