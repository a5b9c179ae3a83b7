"""Fixtures for the dataset tests: small, consistent synthetic maps built without the twin."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worldmodel.data.format import FORMAT_VERSION, MapRecord, save_map

BOUNDS = {"power_dbm": [30.0, 46.0], "mech_tilt_deg": [0.0, 15.0], "elec_tilt_deg": [0.0, 12.0]}


def build_record(
    n_cells: int = 5,
    n_slots: int = 20,
    *,
    seed: int = 0,
    start_slot: int = 90,
    grid: int = 4,
    n_poi: int = 3,
    channels: int = 2,
    fac_px: int = 8,
    name: str = "map",
    scenario: str = "urban-para",
    split: str = "train",
    extent_m: float = 1000.0,
) -> MapRecord:
    """A random but fully consistent map (passes ``validate_map``).

    ``start_slot=90`` makes the default 20 slots cross midnight (slot_of_day wraps 95 -> 0).
    Cell 1 changes its power half-way; every other cell keeps its parameters.
    """
    rng = np.random.default_rng(seed)
    t, n = n_slots, n_cells
    active = rng.random((t, n)) > 0.2
    active[:, 0] = True
    traffic = (rng.gamma(2.0, 5.0, (t, n)) * active).astype(np.float32)
    unserved = rng.uniform(0.0, 1.0, t).astype(np.float32)
    demand = (traffic.sum(1, dtype=np.float64) + unserved).astype(np.float32)
    params = np.stack(
        [
            rng.uniform(30.0, 46.0, n),
            rng.uniform(0.0, 360.0, n),
            rng.uniform(0.0, 15.0, n),
            rng.uniform(0.0, 12.0, n),
        ],
        axis=-1,
    )
    actions = np.repeat(params[None], t, axis=0).astype(np.float32)
    if n > 1:
        actions[t // 2 :, 1, 0] = 30.0 if actions[0, 1, 0] > 38.0 else 46.0
    slot = np.arange(start_slot, start_slot + t, dtype=np.int64)
    kind, _, dataset = scenario.partition("-")
    return MapRecord(
        traffic=traffic,
        actions=actions,
        active=active,
        unserved=unserved,
        demand=demand,
        slot=slot,
        slot_of_day=slot % 96,
        day_of_week=(slot // 96) % 7,
        cell_xy=rng.uniform(0.0, extent_m, (n, 2)).astype(np.float32),
        cell_capacity=rng.uniform(50.0, 100.0, n).astype(np.float32),
        poi=rng.poisson(3.0, (grid, grid, n_poi)).astype(np.float32),
        od=rng.uniform(0.0, 10.0, (t, 2, grid, grid)).astype(np.float32),
        facility=rng.uniform(0.0, 1.0, (channels, fac_px, fac_px)).astype(np.float32),
        metadata={
            "format_version": FORMAT_VERSION,
            "name": name,
            "scenario": scenario,
            "kind": kind,
            "dataset": dataset or "para",
            "split": split,
            "seed": seed,
            "extent_m": extent_m,
            "traffic_unit": "MB",
            "slot_minutes": 15,
            "bounds": {k: list(v) for k, v in BOUNDS.items()},
            "generator_version": "test",
        },
    )


def write_raw(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any] | bytes) -> Path:
    """Write an ``.npz`` exactly as given, bypassing validation (for corrupt-file tests)."""
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    with open(path, "wb") as f:
        np.savez(f, **arrays, metadata_json=np.frombuffer(raw, np.uint8))
    return path


def write_dataset(root: Path, records: Sequence[MapRecord]) -> Path:
    """Save ``records`` into ``root`` with a ``manifest.json`` laid out like ``generate``'s."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for rec in records:
        save_map(rec, root / f"{rec.name}.npz")
        rows.append(
            {
                "file": f"{rec.name}.npz",
                "scenario": rec.metadata["scenario"],
                "split": rec.metadata["split"],
                "seed": rec.metadata["seed"],
                "n_cells": rec.n_cells,
                "n_slots": rec.n_slots,
            }
        )
    manifest = {"format_version": 1, "generator_version": "test", "config": {}, "maps": rows}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture
def make_record() -> Callable[..., MapRecord]:
    """Factory fixture: ``make_record(n_cells, n_slots, seed=..., ...)`` -> ``MapRecord``."""
    return build_record


@pytest.fixture
def raw_writer() -> Callable[..., Path]:
    """Factory fixture: ``raw_writer(path, arrays, meta)`` writes an unvalidated ``.npz``."""
    return write_raw


@pytest.fixture
def dataset_writer() -> Callable[..., Path]:
    """Factory fixture: ``dataset_writer(root, records)`` writes maps plus ``manifest.json``."""
    return write_dataset
