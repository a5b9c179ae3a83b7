"""On-disk format of one generated map (Para or Topo), and its validation.

One ``.npz`` file per map (numpy's zip of ``.npy`` arrays, loaded with
``allow_pickle=False``: no code is ever executed on load). Arrays, with ``T`` slots, ``N``
cells, context grid ``S``, ``K`` POI categories and a ``C × F × F`` facility image:

| key             | dtype   | shape          | meaning                                             |
|-----------------|---------|----------------|-----------------------------------------------------|
| traffic         | float32 | [T, N]         | traffic per cell per slot (``traffic_unit``, ≥ 0)  |
| actions         | float32 | [T, N, 4]      | power_dbm, azimuth_deg, mech_tilt_deg, elec_tilt_deg in effect during each slot |
| active          | bool    | [T, N]         | cell radiating during the slot                      |
| unserved        | float32 | [T]            | demand no cell could serve (below Qrxlevmin)        |
| demand          | float32 | [T]            | total demand of the map                             |
| slot            | int64   | [T]            | absolute slot index (0 = Monday 00:00)              |
| slot_of_day     | int64   | [T]            | ``slot % 96``                                       |
| day_of_week     | int64   | [T]            | ``(slot // 96) % 7``                                |
| cell_xy         | float32 | [N, 2]         | cell positions, metres, south-west origin           |
| cell_capacity   | float32 | [N]            | traffic a cell can carry per slot                   |
| poi             | float32 | [S, S, K]      | POI counts per context-grid cell                    |
| od              | float32 | [T, 2, S, S]   | in-flow / out-flow per grid cell per slot (people)  |
| facility        | float32 | [C, F, F]      | facility image: buildings, base-station layout      |
| metadata_json   | uint8   | [bytes]        | UTF-8 JSON: see ``REQUIRED_META``                   |

Files are written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldmodel.twin.scenario import PARAM_NAMES, SLOTS_PER_DAY

FORMAT_VERSION = 1
REQUIRED_META = (
    "format_version",
    "name",
    "kind",
    "dataset",
    "split",
    "seed",
    "extent_m",
    "traffic_unit",
    "slot_minutes",
    "bounds",
    "generator_version",
)
_ARRAYS: dict[str, tuple[str, int]] = {  # key -> (dtype, ndim)
    "traffic": ("float32", 2),
    "actions": ("float32", 3),
    "active": ("bool", 2),
    "unserved": ("float32", 1),
    "demand": ("float32", 1),
    "slot": ("int64", 1),
    "slot_of_day": ("int64", 1),
    "day_of_week": ("int64", 1),
    "cell_xy": ("float32", 2),
    "cell_capacity": ("float32", 1),
    "poi": ("float32", 3),
    "od": ("float32", 4),
    "facility": ("float32", 3),
}


class DatasetFormatError(ValueError):
    """A map file is missing, corrupt or inconsistent; the message names file and field."""


@dataclass
class MapRecord:
    """One generated map: arrays per the module table plus its metadata dict."""

    traffic: np.ndarray
    actions: np.ndarray
    active: np.ndarray
    unserved: np.ndarray
    demand: np.ndarray
    slot: np.ndarray
    slot_of_day: np.ndarray
    day_of_week: np.ndarray
    cell_xy: np.ndarray
    cell_capacity: np.ndarray
    poi: np.ndarray
    od: np.ndarray
    facility: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_slots(self) -> int:
        return int(self.traffic.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.traffic.shape[1])

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "?"))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _ARRAYS}


def save_map(record: MapRecord, path: str | Path) -> Path:
    """Validate and write ``record`` to ``path`` (``.npz``) atomically; returns the path."""
    path = Path(path)
    meta = {"format_version": FORMAT_VERSION, **record.metadata}
    record = MapRecord(**{**record.arrays(), "metadata": meta})
    validate_map(record, source=str(path))
    payload = {k: np.ascontiguousarray(v) for k, v in record.arrays().items()}
    payload["metadata_json"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_map(path: str | Path) -> MapRecord:
    """Load and validate one map file; raises ``DatasetFormatError`` naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such dataset file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array, not an archive
            raise DatasetFormatError(f"{path}: not an .npz archive (missing all fields)")
        with loaded as z:
            keys = set(z.files)
            missing = [k for k in (*_ARRAYS, "metadata_json") if k not in keys]
            if missing:
                raise DatasetFormatError(f"{path}: missing field(s) {missing}")
            arrays = {k: z[k] for k in _ARRAYS}
            raw_meta = z["metadata_json"]
    except DatasetFormatError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetFormatError(f"{path}: not a readable dataset file ({exc})") from exc
    try:
        meta = json.loads(raw_meta.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(
            f"{path}: field 'metadata_json' is not valid JSON ({exc})"
        ) from exc
    record = MapRecord(**arrays, metadata=meta)
    validate_map(record, source=str(path))
    return record


def validate_map(record: MapRecord, source: str = "<memory>") -> None:
    """Check dtypes, shapes, finiteness, bounds and consistency of a map record."""

    def fail(fieldname: str, msg: str) -> None:
        raise DatasetFormatError(f"{source}: field '{fieldname}': {msg}")

    meta = record.metadata
    if not isinstance(meta, dict):
        fail("metadata_json", "must be a JSON object")
    for key in REQUIRED_META:
        if key not in meta:
            fail("metadata_json", f"missing key '{key}'")
    if meta["format_version"] != FORMAT_VERSION:
        fail("metadata_json", f"format_version {meta['format_version']} != {FORMAT_VERSION}")
    for key, (dtype, ndim) in _ARRAYS.items():
        arr = getattr(record, key)
        if not isinstance(arr, np.ndarray):
            fail(key, f"expected a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.dtype(dtype):
            fail(key, f"dtype {arr.dtype} != {dtype}")
        if arr.ndim != ndim:
            fail(key, f"expected {ndim} dimensions, got shape {arr.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            fail(key, "contains NaN or inf")
    t, n = record.traffic.shape
    if t < 1 or n < 1:
        fail("traffic", f"empty shape {record.traffic.shape}")
    expect = {
        "actions": (t, n, 4),
        "active": (t, n),
        "unserved": (t,),
        "demand": (t,),
        "slot": (t,),
        "slot_of_day": (t,),
        "day_of_week": (t,),
        "cell_xy": (n, 2),
        "cell_capacity": (n,),
    }
    for key, shape in expect.items():
        if getattr(record, key).shape != shape:
            fail(key, f"shape {getattr(record, key).shape} != {shape}")
    s = record.poi.shape[0]
    if record.poi.shape[1] != s:
        fail("poi", f"grid must be square, got {record.poi.shape}")
    if record.od.shape != (t, 2, s, s):
        fail("od", f"shape {record.od.shape} != {(t, 2, s, s)}")
    if record.facility.shape[1] != record.facility.shape[2]:
        fail("facility", f"image must be square, got {record.facility.shape}")
    for key in ("traffic", "unserved", "demand", "poi", "od", "cell_capacity"):
        if (getattr(record, key) < 0).any():
            fail(key, "has negative values")
    if (record.traffic[~record.active] > 0).any():
        fail("traffic", "an inactive cell carries traffic")
    slot = record.slot
    if (slot < 0).any() or (np.diff(slot) != 1).any():
        fail("slot", "must be consecutive non-negative slot indices")
    if not np.array_equal(record.slot_of_day, slot % SLOTS_PER_DAY):
        fail("slot_of_day", "inconsistent with 'slot'")
    if not np.array_equal(record.day_of_week, (slot // SLOTS_PER_DAY) % 7):
        fail("day_of_week", "inconsistent with 'slot'")
    try:
        extent = float(meta["extent_m"])
    except (TypeError, ValueError):
        fail("metadata_json", f"'extent_m' must be a number, got {meta['extent_m']!r}")
    if not (extent > 0 and ((record.cell_xy >= 0) & (record.cell_xy <= extent)).all()):
        fail("cell_xy", f"positions must lie inside [0, extent_m={extent}]")
    bounds = meta["bounds"]
    for j, name in enumerate(PARAM_NAMES):
        col = record.actions[..., j]
        if name == "azimuth_deg":
            lo, hi = 0.0, 360.0
        else:
            try:
                lo, hi = (float(v) for v in bounds[name])
            except (TypeError, ValueError, KeyError):
                fail("metadata_json", f"'bounds' needs a [low, high] pair for '{name}'")
        if (col < lo - 1e-3).any() or (col > hi + 1e-3).any():
            fail("actions", f"{name} outside the recorded bounds [{lo}, {hi}]")
    balance = record.traffic.sum(1) + record.unserved
    if not np.allclose(balance, record.demand, rtol=1e-3, atol=1e-2):
        fail("demand", "served + unserved traffic does not add up to the demand")
