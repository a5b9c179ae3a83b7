"""Section 4 (opt-in), error by lead time.

From ``lead_origins`` forecast origins per map (one every ``LEAD_SPACING`` = 4 slots from the
warm start) every model reads the true traffic before the origin and rolls out ``lead_slots``
(96) slots. MAE (traffic unit of the dataset) by lead time ``ℓ`` (slots since the last true
slot, 1 = the next slot) pooled over origins, maps and active cells, per scenario and overall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from worldmodel.baselines import slice_window
from worldmodel.data.dataset import scenario_name
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.batches import _run_model, origin_batches
from worldmodel.evaluate.config import LEAD_SLOTS, SectionSettings, _ordered_scenarios
from worldmodel.evaluate.models import EvalModel

LEAD_SPACING = 4
LEAD_BATCH = 48  # (map, origin) rows per rollout call
LEAD_BANDS = ((1, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 96))


def lead_section(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    quick: bool = False,
    progress: bool = True,
    lead_slots: int = LEAD_SLOTS,
    n_origins: int | None = None,
) -> dict[str, Any]:
    """Section 4: MAE by lead time from many forecast origins (see module doc)."""
    settings = SectionSettings.resolve(quick, lead_slots=lead_slots, lead_origins=n_origins)
    return run_lead(records, models, settings, progress)


def run_lead(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    settings: SectionSettings,
    progress: bool = True,
) -> dict[str, Any]:
    """Section 4 with resolved ``settings`` (``lead_slots``, ``lead_origins``)."""
    lead_slots, n_origins = settings.lead_slots, settings.lead_origins
    warm = max(m.history for m in models)
    if lead_slots < 1 or n_origins < 1:
        raise ValueError(f"lead_slots and n_origins must be >= 1, got {lead_slots}, {n_origins}")
    chunks = {m.name: -(-lead_slots // m.horizon) for m in models}
    span = max(k * m.horizon for m, k in zip(models, chunks.values(), strict=True))
    origins = warm + LEAD_SPACING * np.arange(n_origins)
    need = int(origins[-1]) + span
    by_scen: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_scen.setdefault(scenario_name(r), []).append(i)
    res: dict[str, Any] = {
        "lead_slots": lead_slots,
        "origins": [int(o) for o in origins],
        "mae_by_lead": {},
        "overall": {},
        "skipped": {},
    }
    err = {m.name: {} for m in models}  # model -> scenario -> [sum |e| [L], count [L]]
    rows = []  # (record index, origin)
    for scen in _ordered_scenarios(list(by_scen)):
        short = [records[i].name for i in by_scen[scen] if records[i].n_slots < need]
        if short:
            res["skipped"][scen] = f"maps shorter than {need} slots: {short}"
            continue
        rows += [(i, int(o)) for i in by_scen[scen] for o in origins]
    n_jobs = -(-len(rows) // LEAD_BATCH)
    batches = origin_batches(records, rows, warm, span, LEAD_BATCH)  # nothing after o is seen
    bar = tqdm(batches, total=n_jobs, desc="lead", unit="batch", disable=not progress)
    for job, batch in bar:
        for m in models:
            k = chunks[m.name]
            window = slice_window(batch, warm - m.history, warm + k * m.horizon)
            pred = _run_model(m, window, k)[:, :lead_slots].numpy()
            for j, (i, o) in enumerate(job):
                rec = records[i]
                t = rec.traffic[o : o + lead_slots].astype(np.float64)
                a = rec.active[o : o + lead_slots]
                e = np.where(a, np.abs(pred[j, :, : rec.n_cells] - t), 0.0)
                acc = err[m.name].setdefault(scenario_name(rec), [0.0, 0])
                acc[0] = acc[0] + e.sum(axis=1)
                acc[1] = acc[1] + a.sum(axis=1)
    bar.close()

    def mae(total: np.ndarray, count: np.ndarray) -> list[float | None]:
        return [float(e / c) if c else None for e, c in zip(total, count, strict=True)]

    for m in models:
        for scen, (total, count) in err[m.name].items():
            res["mae_by_lead"].setdefault(scen, {})[m.name] = mae(total, count)
        if err[m.name]:
            parts = list(err[m.name].values())
            res["overall"][m.name] = mae(sum(p[0] for p in parts), sum(p[1] for p in parts))
    return res


def lead_bands(curve: Sequence[float | None], bands=LEAD_BANDS) -> list[float | None]:
    """Mean of a per-lead MAE curve (lead 1 first) over each ``(first, last)`` band."""
    out: list[float | None] = []
    for lo, hi in bands:
        vals = [v for v in curve[lo - 1 : hi] if v is not None]
        out.append(float(np.mean(vals)) if vals and hi <= len(curve) else None)
    return out
