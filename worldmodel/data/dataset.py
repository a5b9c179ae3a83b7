"""Torch datasets over generated maps: split loading, windows and graph batches (paper §4.1.1).

A *window* is ``T_w = H + K·P`` consecutive slots of one map (``H`` history slots, then ``K``
chunks of ``P`` predicted slots). ``WindowDataset`` yields one window of one map per item,
unpadded; ``collate_maps`` turns a list of such items into a *graph batch*: every map is one
batch sample, maps with fewer cells are zero-padded to the largest cell count ``N`` of the batch
and ``cell_mask [B, N]`` marks the real cells (padded cells are also ``active=False``).

Batch contract (what the model consumes), with ``B`` maps, ``S`` context grid, ``K_poi`` POI
categories and a ``C × F × F`` facility image:

| key          | dtype   | shape               | meaning                                       |
|--------------|---------|---------------------|-----------------------------------------------|
| traffic      | float32 | [B, T_w, N]         | traffic per cell per slot (0 on padded cells) |
| actions      | float32 | [B, T_w, N, 4]      | physical parameters (see ``PARAM_NAMES``)     |
| active       | bool    | [B, T_w, N]         | cell radiating (False on padded cells)        |
| cell_mask    | bool    | [B, N]              | True for real cells, False for padding        |
| cell_xy      | float32 | [B, N, 2]           | cell positions, metres, south-west origin     |
| extent_m     | float32 | [B]                 | side of the square map, metres                |
| slot_of_day  | int64   | [B, T_w]            | ``slot % 96``                                 |
| day_of_week  | int64   | [B, T_w]            | 0 = Monday                                    |
| poi          | float32 | [B, S, S, K_poi]    | POI counts per grid cell                      |
| od           | float32 | [B, T_w, 2, S, S]   | in/out-flow per grid cell per slot            |
| facility     | float32 | [B, C, F, F]        | facility image                                |
| map_index    | int64   | [B]                 | index of the map in the dataset's records     |
| start        | int64   | [B]                 | first slot of the window (row in the map)     |
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from worldmodel.data.format import DatasetFormatError, MapRecord, load_map

SPLITS = ("train", "val", "test")
BATCH_KEYS: tuple[str, ...] = (
    "traffic",
    "actions",
    "active",
    "cell_mask",
    "cell_xy",
    "extent_m",
    "slot_of_day",
    "day_of_week",
    "poi",
    "od",
    "facility",
    "map_index",
    "start",
)
"""Keys of a graph batch, exactly (see the module table)."""

_TIME_KEYS = ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od")
_CELL_KEYS = ("traffic", "actions", "active", "cell_xy")  # padded along their cell axis
_CELL_AXIS = {"traffic": 1, "actions": 1, "active": 1, "cell_xy": 0}  # axis in an item


def scenario_name(record: MapRecord) -> str:
    """Scenario family of a map (e.g. ``"urban-para"``) from its metadata."""
    meta = record.metadata
    if "scenario" in meta:
        return str(meta["scenario"])
    return f"{meta.get('kind', '?')}-{meta.get('dataset', '?')}"


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``root/manifest.json``; raises ``DatasetFormatError`` naming it."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such manifest (generate the dataset first)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not a readable JSON manifest ({exc})") from exc
    maps = manifest.get("maps") if isinstance(manifest, dict) else None
    if not isinstance(maps, list):
        raise DatasetFormatError(f"{path}: field 'maps' missing or not a list")
    for i, row in enumerate(maps):
        if not isinstance(row, dict) or not all(k in row for k in ("file", "scenario", "split")):
            raise DatasetFormatError(
                f"{path}: field 'maps[{i}]' must be an object with 'file', 'scenario', 'split'"
            )
    return manifest


def load_split(root: str | Path, split: str, scenarios: list[str] | None = None) -> list[MapRecord]:
    """Load (and validate) every map of ``split`` listed in ``root/manifest.json``.

    ``scenarios`` optionally keeps only those scenario families (e.g. ``["urban-para"]``); a
    name that the manifest never mentions raises ``ValueError``. Maps come in manifest order.
    An existing scenario without maps in ``split`` simply contributes none. A counterfactual
    branch shares the context arrays of its base map (one copy in memory).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    manifest = read_manifest(root)
    rows = manifest["maps"]
    if scenarios is not None:
        known = sorted({str(r["scenario"]) for r in rows})
        unknown = [s for s in scenarios if s not in known]
        if unknown:
            raise ValueError(
                f"{root / 'manifest.json'}: unknown scenario(s) {unknown}; available: {known}"
            )
    records: list[MapRecord] = []
    by_name: dict[str, MapRecord] = {}
    for row in rows:
        if row["split"] != split or (scenarios is not None and row["scenario"] not in scenarios):
            continue
        path = root / str(row["file"])
        if not path.is_file():
            raise DatasetFormatError(
                f"{path}: listed in {root / 'manifest.json'} but the file is missing"
            )
        rec = load_map(path)
        if rec.metadata.get("split", split) != split:
            raise DatasetFormatError(
                f"{path}: field 'metadata_json': split {rec.metadata['split']!r} "
                f"but the manifest lists it under {split!r}"
            )
        base = by_name.get(str(rec.metadata.get("branch_of")))
        if base is not None:
            _share_context(rec, base)
        by_name[rec.name] = rec
        records.append(rec)
    return records


_SHARED_WITH_BRANCHES = ("demand", "slot", "slot_of_day", "day_of_week", "cell_xy",
                         "cell_capacity", "poi", "od", "facility")  # fmt: skip
"""Arrays a branch map has in common with its base map (same scenario, slots and demand)."""


def _share_context(rec: MapRecord, base: MapRecord) -> None:
    """Point ``rec``'s context arrays at ``base``'s identical ones, so a map and its branches
    hold one copy of the OD flows (``[T, 2, S, S]``, the largest array) in memory."""
    for key in _SHARED_WITH_BRANCHES:
        mine, theirs = getattr(rec, key), getattr(base, key)
        if mine.shape == theirs.shape and np.array_equal(mine, theirs):
            setattr(rec, key, theirs)


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # torch.from_numpy warns on read-only arrays
        arr = arr.copy()
    return torch.from_numpy(arr)


class WindowDataset(Dataset):
    """Windows of ``history + n_chunks * horizon`` slots over a list of maps.

    Item ``i`` is one window ``(map_index, start)``; windows start every ``stride`` slots
    (default ``horizon``) and a map of ``T`` slots has ``max(0, (T - T_w) // stride + 1)`` of
    them. Items are dicts of tensors for one map, unpadded (see ``collate_maps``); their
    time-sliced tensors are views of per-map tensors converted once, so treat them read-only.

    Older memories (``memory_age > 1``, with the model's ``season``): the window's first
    ``T_w - season`` slots, which a daily-memory model reads only as the memory of its tokens,
    come from ``age - 1`` seasons earlier (all time-indexed keys, the day of week included), with
    ``age`` drawn from 1 to ``min(memory_age, 1 + start // season)``, fixed per window and the
    same for sibling maps (``seed``).
    """

    def __init__(
        self,
        records: Sequence[MapRecord],
        history: int,
        horizon: int,
        n_chunks: int = 1,
        stride: int | None = None,
        season: int = 0,
        memory_age: int = 1,
        seed: int = 0,
    ) -> None:
        stride = horizon if stride is None else stride
        if memory_age < 1 or (memory_age > 1 and not 0 < season < history):
            raise ValueError(
                f"memory_age={memory_age} needs memory_age >= 1 and, when > 1, a daily memory "
                f"0 < season < history ({history}), got season {season}"
            )
        for name, v in (("history", history), ("horizon", horizon)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        for name, v in (("n_chunks", n_chunks), ("stride", stride)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.records = list(records)
        self.history = int(history)
        self.horizon = int(horizon)
        self.n_chunks = int(n_chunks)
        self.stride = int(stride)
        self.window = self.history + self.n_chunks * self.horizon
        self.season, self.memory_age, self.seed = int(season), int(memory_age), int(seed)
        self._maps = [self._to_torch(r) for r in self.records]
        counts = [self.windows_per_map(r.n_slots) for r in self.records]
        self._counts = np.asarray(counts, dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        groups: dict[str, list[int]] = {}
        for m, r in enumerate(self.records):
            key = str(r.metadata.get("branch_of") or r.name)
            groups.setdefault(key, []).append(m)
        self._siblings = [
            [j for j in groups[str(r.metadata.get("branch_of") or r.name)] if j != m]
            for m, r in enumerate(self.records)
        ]
        order = {key: g for g, key in enumerate(sorted(groups))}
        self._group = [order[str(r.metadata.get("branch_of") or r.name)] for r in self.records]

    @property
    def has_branches(self) -> bool:
        """True when some map has a counterfactual sibling (a branch or its base)."""
        return any(self._siblings)

    def siblings(self, i: int) -> list[int]:
        """Items with the same window in the sibling maps of item ``i``'s map (a base map and
        its branches share scenario, slots, demand and fading; only the actions differ)."""
        m, start = self.index(int(i))
        return [
            int(self._offsets[j]) + start // self.stride
            for j in self._siblings[m]
            if self.records[j].n_slots == self.records[m].n_slots
        ]

    def windows_per_map(self, n_slots: int) -> int:
        """Number of windows in a map of ``n_slots`` slots."""
        return max(0, (n_slots - self.window) // self.stride + 1)

    @staticmethod
    def _to_torch(rec: MapRecord) -> dict[str, torch.Tensor]:
        out = {k: _as_tensor(getattr(rec, k)) for k in (*_TIME_KEYS, "cell_xy", "poi", "facility")}
        out["extent_m"] = torch.tensor(float(rec.metadata["extent_m"]), dtype=torch.float32)
        return out

    @property
    def cells_per_item(self) -> np.ndarray:
        """Cell count of each item's map, ``[len(self)]`` (for size bucketing)."""
        per_map = np.array([r.n_cells for r in self.records], dtype=np.int64)
        return np.repeat(per_map, self._counts)

    def index(self, i: int) -> tuple[int, int]:
        """``(map_index, start)`` of item ``i``."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        i = i % len(self)
        m = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return m, int(i - self._offsets[m]) * self.stride

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def memory_age_of(self, i: int) -> int:
        """Age in days of item ``i``'s memory (1 unless ``memory_age > 1``)."""
        if self.memory_age == 1:
            return 1
        m, start = self.index(int(i))
        oldest = min(self.memory_age, 1 + start // self.season)
        rng = np.random.default_rng([self.seed, self._group[m], start, 0x4D454D])
        return 1 + int(rng.integers(oldest))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        m, start = self.index(int(i))
        src = self._maps[m]
        sl = slice(start, start + self.window)
        age = self.memory_age_of(i)
        if age == 1:
            item = {k: src[k][sl] for k in _TIME_KEYS}
        else:  # the memory-only slots from (age - 1) seasons earlier
            n_mem = self.window - self.season
            old = start - (age - 1) * self.season
            rows = torch.cat([torch.arange(old, old + n_mem), torch.arange(start + n_mem, sl.stop)])
            item = {k: src[k][rows] for k in _TIME_KEYS}
        item.update(
            cell_xy=src["cell_xy"],
            extent_m=src["extent_m"],
            poi=src["poi"],
            facility=src["facility"],
            map_index=torch.tensor(m, dtype=torch.int64),
            start=torch.tensor(start, dtype=torch.int64),
        )
        return item


def collate_maps(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Graph batch of ``WindowDataset`` items: pad cells to the largest ``N``, add ``cell_mask``.

    Padded cells are zero everywhere (``active`` False, ``cell_mask`` False). Window length,
    context grid ``S``, POI categories and facility image must agree across the batch
    (``ValueError`` otherwise). Returns the keys of ``BATCH_KEYS`` with a leading ``B``.
    """
    if not items:
        raise ValueError("collate_maps: empty batch")
    checks = {
        "window length": lambda it: tuple(it["traffic"].shape[:1]),
        "context grid ('poi')": lambda it: tuple(it["poi"].shape),
        "OD grid ('od')": lambda it: tuple(it["od"].shape),
        "facility image ('facility')": lambda it: tuple(it["facility"].shape),
    }
    for what, shape_of in checks.items():
        shapes = {shape_of(it) for it in items}
        if len(shapes) > 1:
            raise ValueError(
                f"collate_maps: maps of one batch must share the {what} shape; got "
                f"{sorted(shapes)} (map_index {_map_ids(items)})"
            )
    n_max = max(int(it["traffic"].shape[1]) for it in items)
    b = len(items)
    batch: dict[str, torch.Tensor] = {}
    for key in _CELL_KEYS:
        axis = _CELL_AXIS[key]
        ref = items[0][key]
        shape = list(ref.shape)
        shape[axis] = n_max
        out = torch.zeros((b, *shape), dtype=ref.dtype)
        for j, it in enumerate(items):
            n = it[key].shape[axis]
            out[j].narrow(axis, 0, n).copy_(it[key])
        batch[key] = out
    mask = torch.zeros((b, n_max), dtype=torch.bool)
    for j, it in enumerate(items):
        mask[j, : it["traffic"].shape[1]] = True
    batch["cell_mask"] = mask
    for key in BATCH_KEYS:
        if key not in batch:
            batch[key] = torch.stack([it[key] for it in items])
    return {k: batch[k] for k in BATCH_KEYS}


def _map_ids(items: Sequence[dict[str, torch.Tensor]]) -> list[int]:
    return [int(it["map_index"]) for it in items if "map_index" in it]


class SizeBucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of windows whose maps have similar cell counts (less padding).

    Each epoch: shuffle all windows, cut them into pools of ``pool_batches`` batches, sort each
    pool by cell count, cut it into batches, then shuffle the batches. Reproducible through
    ``generator``.
    """

    def __init__(
        self,
        sizes: np.ndarray,
        batch_size: int,
        generator: torch.Generator,
        pool_batches: int = 16,
        drop_last: bool = False,
    ) -> None:
        self.sizes = np.asarray(sizes)
        self.batch_size = int(batch_size)
        self.generator = generator
        self.pool = int(pool_batches) * self.batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(len(self.sizes), generator=self.generator).numpy()
        batches: list[list[int]] = []
        for p in range(0, len(perm), self.pool):
            pool = perm[p : p + self.pool]
            pool = pool[np.argsort(self.sizes[pool], kind="stable")]
            for q in range(0, len(pool), self.batch_size):
                chunk = pool[q : q + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk.tolist())
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([batches[i] for i in order])

    def __len__(self) -> int:
        n, bs = len(self.sizes), self.batch_size
        if not self.drop_last:
            return sum(-(-min(self.pool, n - p) // bs) for p in range(0, n, self.pool))
        return sum(min(self.pool, n - p) // bs for p in range(0, n, self.pool))


def make_loader(
    records: Sequence[MapRecord],
    history: int,
    horizon: int,
    n_chunks: int = 1,
    batch_size: int = 8,
    shuffle: bool = True,
    seed: int = 0,
    stride: int | None = None,
    num_workers: int = 0,
    sampler: Sampler | None = None,
    bucket_by_size: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """``DataLoader`` of graph batches over the windows of ``records``.

    Shuffling is reproducible: a ``torch.Generator`` seeded with ``seed`` drives it (and the
    worker seeds). ``sampler`` (a custom index sampler) overrides ``shuffle``;
    ``bucket_by_size`` batches windows of maps with similar cell counts (needs no ``sampler``).
    Raises ``ValueError`` when the maps are too short for a single window.
    """
    ds = WindowDataset(records, history, horizon, n_chunks=n_chunks, stride=stride)
    if len(ds) == 0:
        lens = sorted({r.n_slots for r in ds.records})
        raise ValueError(
            f"no windows: {len(ds.records)} map(s) with slot counts {lens} but a window needs "
            f"{ds.window} slots (history {history} + {n_chunks} x horizon {horizon})"
        )
    gen = torch.Generator().manual_seed(int(seed))
    common: dict[str, Any] = {
        "collate_fn": collate_maps,
        "num_workers": num_workers,
        "generator": gen,
        "persistent_workers": False,
    }
    if bucket_by_size:
        if sampler is not None:
            raise ValueError("make_loader: pass either sampler or bucket_by_size, not both")
        if not shuffle:
            order = np.argsort(ds.cells_per_item, kind="stable")
            batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
            if drop_last and batches and len(batches[-1]) < batch_size:
                batches.pop()
            return DataLoader(ds, batch_sampler=batches, **common)
        bs = SizeBucketBatchSampler(ds.cells_per_item, batch_size, gen, drop_last=drop_last)
        return DataLoader(ds, batch_sampler=bs, **common)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        drop_last=drop_last,
        **common,
    )


def _percentiles(values: np.ndarray, qs: Sequence[float]) -> dict[str, float]:
    if values.size == 0:
        return {f"p{q:g}": 0.0 for q in qs}
    return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(values, qs), strict=True)}


def dataset_summary(records: Sequence[MapRecord], max_samples: int = 2_000_000) -> dict[str, Any]:
    """JSON-ready summary of a list of maps (stored in checkpoints' config).

    Traffic statistics are over active cell-slots; percentiles use an evenly strided sample of
    at most ``max_samples`` values. ``param_change_share``: share of cells whose parameters
    change at least once; ``active_change_share``: share of cells switched on or off.
    """
    n_cells = sum(r.n_cells for r in records)
    total = 0.0
    total_sq = 0.0
    count = 0
    t_max = 0.0
    changed = 0
    toggled = 0
    active_slots = 0
    parts: list[np.ndarray] = []
    per_scenario: dict[str, dict[str, int]] = {}
    per_split: dict[str, int] = {}
    units: set[str] = set()
    cell_slots = sum(r.n_cells * r.n_slots for r in records)
    step = max(1, -(-cell_slots // max_samples))
    for rec in records:
        vals = rec.traffic[rec.active].astype(np.float64)
        total += float(vals.sum())
        total_sq += float(np.square(vals).sum())
        count += vals.size
        active_slots += int(rec.active.sum())
        if vals.size:
            t_max = max(t_max, float(vals.max()))
        parts.append(vals[::step])
        changed += int((rec.actions != rec.actions[:1]).any(axis=(0, 2)).sum())
        toggled += int((rec.active != rec.active[:1]).any(axis=0).sum())
        sc = per_scenario.setdefault(scenario_name(rec), {"maps": 0, "cells": 0, "slots": 0})
        sc["maps"] += 1
        sc["cells"] += rec.n_cells
        sc["slots"] += rec.n_slots
        split = str(rec.metadata.get("split", "?"))
        per_split[split] = per_split.get(split, 0) + 1
        units.add(str(rec.metadata.get("traffic_unit", "?")))
    mean = total / count if count else 0.0
    std = float(np.sqrt(max(0.0, total_sq / count - mean**2))) if count else 0.0
    sample = np.concatenate(parts) if parts else np.zeros(0)
    return {
        "n_maps": len(records),
        "n_cells": n_cells,
        "n_slots": sum(r.n_slots for r in records),
        "cell_slots": cell_slots,
        "active_share": active_slots / cell_slots if cell_slots else 0.0,
        "traffic_unit": sorted(units),
        "traffic": {
            "mean": mean,
            "std": std,
            "max": t_max,
            **_percentiles(sample, (5, 25, 50, 75, 95, 99)),
        },
        "param_change_share": changed / n_cells if n_cells else 0.0,
        "active_change_share": toggled / n_cells if n_cells else 0.0,
        "scenarios": dict(sorted(per_scenario.items())),
        "splits": dict(sorted(per_split.items())),
        "maps": [r.name for r in records],
    }
