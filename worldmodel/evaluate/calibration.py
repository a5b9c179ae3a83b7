"""Section 5 (opt-in), calibration of the predictive distributions and the out-of-distribution gate.

Every MobiWM checkpoint that carries a quantile head (``worldmodel.model.uncertainty``) rolls out
``lead_slots`` (96) slots from ``calib_origins`` forecast origins per map, spread evenly after the
warm start, reading only the truth before each origin. Against it, **seasonal-naive with
empirical quantiles**: the same slot one day earlier (observed, as the lead is at most a day),
spread by the empirical quantiles of that copy's own past errors on the map — the change of
``log1p(x / s)`` over a day (``s``: the map's median positive traffic before the origin), pooled
over the cells and the slots before the origin. Pooled over origins, maps and active cells per
scenario, for both:

* coverage of the central 50 % and 90 % intervals (overall and per band of lead times);
* CRPS (MB; the quantile-score form of ``worldmodel.uncertainty.metrics.crps``), sharpness (mean
  width of the 50 % / 90 % intervals, MB) and the PIT histogram (10 bins; flat = calibrated);
* Spearman's rank correlation between the 90 % width and the point prediction's absolute
  error (does the spread grow where the error does).

The gate: the support distance (``ActionSupport.score``) of the counterfactual section's plans on
these maps; AUROC of ``overpower`` (power above the training maximum, azimuth ±60°) against
``random`` in-range plans, and the share of each kind flagged by the head's fitted threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from worldmodel.data.dataset import scenario_name
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.config import SectionSettings, _ordered_scenarios
from worldmodel.evaluate.lead import LEAD_BANDS
from worldmodel.evaluate.models import EvalModel
from worldmodel.twin.scenario import SLOTS_PER_DAY

SEASONAL_NAME = "seasonal-quantiles"
PIT_BINS = 10
SPEARMAN_SAMPLE = 20_000  # (cell, slot) pairs per batch kept for the rank correlation
GATE_PLANS = 4  # random plans per map for the gate's AUROC


def _head_models(models: Sequence[EvalModel]) -> list[EvalModel]:
    from worldmodel.baselines import MobiWMAdapter

    return [
        m
        for m in models
        if isinstance(m.wm, MobiWMAdapter) and m.wm.model.uncertainty_head is not None
    ]


def seasonal_quantiles(
    records: Sequence[MapRecord],
    job: Sequence[tuple[int, int]],
    lead_slots: int,
    n_max: int,
    levels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Seasonal-naive point ``[B, L, N]`` and quantiles ``[B, L, N, Q]`` (MB) per origin (see
    the module doc); needs ``origin >= SLOTS_PER_DAY + 1`` and ``lead_slots <= SLOTS_PER_DAY``."""
    if lead_slots > SLOTS_PER_DAY:
        raise ValueError(f"seasonal quantiles need lead_slots <= {SLOTS_PER_DAY}")
    b = len(job)
    point = np.zeros((b, lead_slots, n_max))
    quant = np.zeros((b, lead_slots, n_max, len(levels)))
    for j, (i, o) in enumerate(job):
        rec = records[i]
        past = rec.traffic[:o].astype(np.float64)
        on = rec.active[:o]
        if o <= SLOTS_PER_DAY:
            raise ValueError(f"origin {o} leaves no day of history for the seasonal copy")
        pos = past[on & (past > 0)]
        s = float(np.median(pos)) if pos.size else 1.0
        lg = np.log1p(past / s)
        both = on[SLOTS_PER_DAY:] & on[:-SLOTS_PER_DAY]
        d = (lg[SLOTS_PER_DAY:] - lg[:-SLOTS_PER_DAY])[both]
        dq = np.quantile(d, levels) if d.size else np.zeros(len(levels))
        copy = rec.traffic[o - SLOTS_PER_DAY : o - SLOTS_PER_DAY + lead_slots].astype(np.float64)
        point[j, :, : rec.n_cells] = copy
        quant[j, :, : rec.n_cells] = np.maximum(s * np.expm1(np.log1p(copy / s)[..., None] + dq), 0)
    return point, quant


class _Acc:
    """Running sums of one (model, scenario): per lead, coverage, CRPS, widths; PIT counts;
    a sample of (width, |error|) pairs."""

    def __init__(self, lead_slots: int) -> None:
        self.n = np.zeros(lead_slots)
        self.cov50 = np.zeros(lead_slots)
        self.cov90 = np.zeros(lead_slots)
        self.crps = np.zeros(lead_slots)
        self.w50 = np.zeros(lead_slots)
        self.w90 = np.zeros(lead_slots)
        self.pit = np.zeros(PIT_BINS)
        self.width: list[np.ndarray] = []
        self.err: list[np.ndarray] = []

    def add(self, q, point, y, ok, levels, rng) -> None:
        from worldmodel.uncertainty import metrics as um

        okf = ok.astype(np.float64)
        self.n += okf.sum(axis=(0, 2))
        cov50 = um.covered(q, y, levels, 0.5)
        cov90 = um.covered(q, y, levels, 0.9)
        self.cov50 += (cov50 * okf).sum(axis=(0, 2))
        self.cov90 += (cov90 * okf).sum(axis=(0, 2))
        self.crps += (um.crps(q, y, levels) * okf).sum(axis=(0, 2))
        w50 = um.interval_width(q, levels, 0.5)
        w90 = um.interval_width(q, levels, 0.9)
        self.w50 += (w50 * okf).sum(axis=(0, 2))
        self.w90 += (w90 * okf).sum(axis=(0, 2))
        u = um.pit(q[ok], y[ok], levels, rng)
        self.pit += np.histogram(u, bins=PIT_BINS, range=(0.0, 1.0))[0]
        k = min(SPEARMAN_SAMPLE, int(ok.sum()))
        pick = rng.choice(int(ok.sum()), size=k, replace=False)
        self.width.append(w90[ok][pick])
        self.err.append(np.abs(point - y)[ok][pick])

    def merge(self, other: _Acc) -> None:
        for k in ("n", "cov50", "cov90", "crps", "w50", "w90", "pit"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.width += other.width
        self.err += other.err

    def summary(self) -> dict[str, Any]:
        from worldmodel.uncertainty import metrics as um

        tot = max(float(self.n.sum()), 1.0)

        def band(x: np.ndarray, lo: int, hi: int) -> float | None:
            n = self.n[lo - 1 : hi].sum()
            return float(x[lo - 1 : hi].sum() / n) if n else None

        bands = [(lo, hi) for lo, hi in LEAD_BANDS if hi <= len(self.n)]
        w, e = np.concatenate(self.width), np.concatenate(self.err)
        return {
            "n": int(self.n.sum()),
            "coverage50": float(self.cov50.sum() / tot),
            "coverage90": float(self.cov90.sum() / tot),
            "crps": float(self.crps.sum() / tot),
            "width50": float(self.w50.sum() / tot),
            "width90": float(self.w90.sum() / tot),
            "pit_histogram": (self.pit / max(self.pit.sum(), 1) * PIT_BINS).tolist(),
            "spearman_width_error": um.spearman(w, e) if len(w) > 2 else None,
            "bands": [list(b) for b in bands],
            "coverage50_by_band": [band(self.cov50, *b) for b in bands],
            "coverage90_by_band": [band(self.cov90, *b) for b in bands],
            "crps_by_band": [band(self.crps, *b) for b in bands],
        }


def run_calibration(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    settings: SectionSettings,
    progress: bool = True,
) -> dict[str, Any]:
    """Section 5 with resolved ``settings`` (``lead_slots``, ``calib_origins``, ``seed``)."""
    from worldmodel.uncertainty.fit import forecasts
    from worldmodel.uncertainty.gate import plan_scores
    from worldmodel.uncertainty.metrics import auroc

    lead_slots, n_origins = settings.lead_slots, settings.calib_origins
    res: dict[str, Any] = {"lead_slots": lead_slots, "origins_per_map": n_origins, "models": {}}
    heads = _head_models(models)
    if not heads:
        res["skipped"] = "no model carries a quantile head (python -m worldmodel.uncertainty.train)"
        return res
    scen_of = [scenario_name(r) for r in records]
    scenarios = _ordered_scenarios(scen_of)
    res["scenarios"] = scenarios
    rng = np.random.default_rng(settings.seed)
    for m in heads:
        model = m.wm.model
        levels = np.asarray(model.uncertainty_head.levels)
        acc: dict[str, dict[str, _Acc]] = {m.name: {}, SEASONAL_NAME: {}}
        it = forecasts(model, records, n_origins, lead_slots, progress, f"calibration {m.name}",
                       first_origin=SLOTS_PER_DAY + 1)  # fmt: skip
        for job, fc, y, ok in it:
            sp, sq = seasonal_quantiles(records, job, lead_slots, y.shape[2], levels)
            q = fc.quantiles.double().numpy()
            point = fc.point.double().numpy()
            for scen in {scen_of[i] for i, _ in job}:
                rows = np.array([scen_of[i] == scen for i, _ in job])
                for name, qq, pp in ((m.name, q, point), (SEASONAL_NAME, sq, sp)):
                    a = _Acc(lead_slots)
                    a.add(qq[rows], pp[rows], y[rows], ok[rows], levels, rng)
                    acc[name].setdefault(scen, _Acc(lead_slots)).merge(a)
        for name, per in acc.items():
            out = {s: per[s].summary() for s in scenarios if s in per}
            total = _Acc(lead_slots)
            for a in per.values():
                total.merge(a)
            out["all"] = total.summary()
            res["models"].setdefault(m.name, {})[name] = out
        support = model.uncertainty_head.support
        if support is not None:
            sc = plan_scores(support, records, GATE_PLANS, settings.seed, model.cfg.history)
            pos, neg = sc.get("overpower", []), sc.get("random", [])
            thr = support.threshold
            res["models"][m.name]["gate"] = {
                "threshold": None if not np.isfinite(thr) else thr,
                "auroc_overpower_vs_random": auroc(pos, neg) if pos and neg else None,
                "flagged": {k: float(np.mean(np.asarray(v) > thr)) for k, v in sc.items()},
                "n_plans": {k: len(v) for k, v in sc.items()},
            }
    return res


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def render_calibration(cal: dict[str, Any], names: list[str], unit: str) -> list[str]:
    """Section 5: coverage, CRPS, sharpness per scenario; coverage by lead; PIT; the gate."""
    md = ["", "## 5. Calibration of the predictive distributions", ""]
    if cal.get("skipped"):
        return md + [f"*Skipped: {cal['skipped']}.*"]
    md.append(
        f"{cal['origins_per_map']} forecast origins per map, {cal['lead_slots']}-slot rollouts; "
        f"50 % / 90 % central-interval coverage (goal 45–55 % / 87–93 %), CRPS and mean "
        f"interval widths ({unit}), Spearman ρ of the 90 % width with the point error; "
        f"`{SEASONAL_NAME}`: the seasonal copy with the empirical quantiles of its past errors."
    )
    for model, rows in cal["models"].items():
        scen = [s for s in cal["scenarios"] if s in rows[model]] + ["all"]
        md += ["", f"**{model}**", ""]
        md.append(
            "| scenario | model | cov. 50 % | cov. 90 % | CRPS | width 50 % | width 90 % | ρ |"
        )
        md.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for s in scen:
            for name in (model, SEASONAL_NAME):
                r = rows[name][s]
                md.append(
                    f"| {s} | {name} | {100 * r['coverage50']:.1f} | {100 * r['coverage90']:.1f} "
                    f"| {r['crps']:.2f} | {r['width50']:.1f} | {r['width90']:.1f} "
                    f"| {_f(r['spearman_width_error'], '{:.2f}')} |"
                )
        allr = rows[model]["all"]
        bands = [f"{lo}–{hi}" for lo, hi in allr["bands"]]
        md += ["", "Coverage by lead time (slots; all scenarios):", ""]
        md.append("| model | interval | " + " | ".join(bands) + " |")
        md.append("|---|---|" + "---:|" * len(bands))
        for name in (model, SEASONAL_NAME):
            r = rows[name]["all"]
            for key, lab in (("coverage50_by_band", "50 %"), ("coverage90_by_band", "90 %")):
                vals = " | ".join(_f(None if v is None else 100 * v) for v in r[key])
                md.append(f"| {name} | {lab} | {vals} |")
        pit = " ".join(f"{v:.2f}" for v in allr["pit_histogram"])
        md += ["", f"PIT histogram of {model} (10 bins, 1.00 = flat): {pit}"]
        gate = rows.get("gate")
        if gate:
            flagged = ", ".join(f"{k} {100 * v:.0f} %" for k, v in gate["flagged"].items())
            md += [
                "",
                f"Gate: AUROC overpower vs random {_f(gate['auroc_overpower_vs_random'], '{:.3f}')}"
                f"; flagged at threshold {_f(gate['threshold'], '{:.3f}')}: {flagged}.",
            ]
    return md
