"""Window items and batched rollouts shared by the sections (rows are map rows, 15-min slots)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from worldmodel.baselines import MobiWMAdapter
from worldmodel.data.dataset import collate_maps
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.models import EvalModel
from worldmodel.model.mobiwm import DailyMemory
from worldmodel.twin.scenario import DAYS_PER_WEEK, SLOTS_PER_DAY


def map_item(
    rec: MapRecord,
    rows: np.ndarray,
    traffic: np.ndarray,
    actions: np.ndarray,
    active: np.ndarray,
    index: int = 0,
) -> dict[str, torch.Tensor]:
    """One map's window item (``WindowDataset`` layout) over map rows ``rows``.

    Rows may run past the map's end: time indices continue (slot ``slot[0] + row``) and the OD
    of row ``r`` is the OD of row ``r mod T_map``. ``traffic [T, N]``, ``actions [T, N, 4]``,
    ``active [T, N]`` are given by the caller (history / plan / zeros).
    """
    rows = np.asarray(rows, dtype=np.int64)
    slot = int(rec.slot[0]) + rows
    return {
        "traffic": torch.as_tensor(np.ascontiguousarray(traffic, dtype=np.float32)),
        "actions": torch.as_tensor(np.ascontiguousarray(actions, dtype=np.float32)),
        "active": torch.as_tensor(np.ascontiguousarray(active, dtype=bool)),
        "cell_xy": torch.as_tensor(np.ascontiguousarray(rec.cell_xy, dtype=np.float32)),
        "extent_m": torch.tensor(float(rec.metadata["extent_m"]), dtype=torch.float32),
        "slot_of_day": torch.as_tensor(slot % SLOTS_PER_DAY),
        "day_of_week": torch.as_tensor((slot // SLOTS_PER_DAY) % DAYS_PER_WEEK),
        "poi": torch.as_tensor(np.ascontiguousarray(rec.poi)),
        "od": torch.as_tensor(np.ascontiguousarray(rec.od[rows % rec.n_slots])),
        "facility": torch.as_tensor(np.ascontiguousarray(rec.facility)),
        "map_index": torch.tensor(index, dtype=torch.int64),
        "start": torch.tensor(int(rows[0]), dtype=torch.int64),
    }


def _held(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``arr[rows]`` with rows past the end held at the last row."""
    return arr[np.minimum(rows, len(arr) - 1)]


def _run_model(
    model: EvalModel, batch: dict[str, torch.Tensor], n_chunks: int, memory: Any = None
) -> torch.Tensor:
    kw = {} if memory is None else {"memory": memory}
    with torch.no_grad():
        return model.wm.rollout_batch(batch, n_chunks, **kw).detach().float().cpu()


def _warm_memory(model: EvalModel, rec: MapRecord) -> DailyMemory | None:
    """The warm start's last season of ``rec`` as a ``DailyMemory`` seen from the map's first
    slot (each segment shifts the offset) for a MobiWM row with the observed daily memory;
    else None."""
    wm = model.wm
    if not isinstance(wm, MobiWMAdapter) or wm.memory != "observed" or not wm.model.cfg.season:
        return None
    h, dev = wm.history, wm.model.device

    def rows(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a[:h]), device=dev).to(dtype)[None]

    return DailyMemory.of_history(
        rows(rec.traffic, torch.float32), rows(rec.actions, torch.float32),
        rows(rec.active, torch.bool), wm.model.cfg.season,
    )  # fmt: skip


def _shape_key(rec: MapRecord) -> tuple:
    """Maps with equal keys can share one ``collate_maps`` batch (same context shapes)."""
    return (rec.poi.shape, rec.od.shape[1:], rec.facility.shape)


def _group_by_shape(records: Sequence[MapRecord]) -> list[list[int]]:
    """Indices of maps that ``collate_maps`` can batch together (same context shapes)."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(_shape_key(r), []).append(i)
    return list(groups.values())


def origin_batches(
    records: Sequence[MapRecord],
    rows: Sequence[tuple[int, int]],
    warm: int,
    span: int,
    batch_rows: int,
) -> Iterator[tuple[list[tuple[int, int]], dict[str, torch.Tensor]]]:
    """Batches of ``(map, origin)`` rows: map rows ``[o − warm, o + span)``, the traffic after
    the origin zeroed (never seen), true actions and active flags; maps of one context shape
    per batch."""
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for i, o in rows:
        groups.setdefault(_shape_key(records[i]), []).append((i, o))
    for g in groups.values():
        for j in range(0, len(g), batch_rows):
            job = g[j : j + batch_rows]
            items = []
            for i, o in job:
                rec = records[i]
                sel = np.arange(o - warm, o + span)
                traffic = rec.traffic[sel].copy()
                traffic[warm:] = 0.0
                items.append(map_item(rec, sel, traffic, rec.actions[sel], rec.active[sel], i))
            yield job, collate_maps(items)
