"""On-disk map format: round trip, atomic writes and clear errors for every kind of bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worldmodel.data.format import (
    REQUIRED_META,
    DatasetFormatError,
    MapRecord,
    load_map,
    save_map,
    validate_map,
)


def _assert_equal(a: MapRecord, b: MapRecord) -> None:
    for key, arr in a.arrays().items():
        other = getattr(b, key)
        assert other.dtype == arr.dtype, key
        np.testing.assert_array_equal(other, arr, err_msg=key)
    assert a.metadata == b.metadata


def test_round_trip(tmp_path: Path, make_record) -> None:
    rec = make_record(6, 30, seed=3)
    path = save_map(rec, tmp_path / "m.npz")
    assert path == tmp_path / "m.npz"
    back = load_map(path)
    _assert_equal(rec, back)
    assert back.n_cells == 6 and back.n_slots == 30 and back.name == "map"
    assert set(REQUIRED_META) <= set(back.metadata)


def test_fixture_is_consistent(make_record) -> None:
    rec = make_record(5, 20)
    validate_map(rec)
    np.testing.assert_allclose(rec.traffic.sum(1) + rec.unserved, rec.demand, rtol=1e-5)
    assert rec.slot_of_day[5] == 95 and rec.slot_of_day[6] == 0  # crosses midnight
    assert rec.day_of_week[5] == 0 and rec.day_of_week[6] == 1


def test_save_leaves_no_temp_file(tmp_path: Path, make_record) -> None:
    save_map(make_record(), tmp_path / "a.npz")
    save_map(make_record(seed=1), tmp_path / "a.npz")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def test_failed_write_keeps_old_file(tmp_path: Path, make_record, monkeypatch) -> None:
    old = make_record(seed=1)
    path = save_map(old, tmp_path / "a.npz")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_map(make_record(seed=2), path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
    _assert_equal(old, load_map(path))


def test_save_rejects_invalid_record(tmp_path: Path, make_record) -> None:
    rec = make_record()
    rec.traffic[0, 0] = np.nan
    with pytest.raises(DatasetFormatError, match="traffic"):
        save_map(rec, tmp_path / "bad.npz")
    assert list(tmp_path.iterdir()) == []


def _raw(rec: MapRecord) -> tuple[dict[str, np.ndarray], dict]:
    return dict(rec.arrays()), dict(rec.metadata)


def _nan_traffic(a: dict, m: dict) -> None:
    a["traffic"] = a["traffic"].copy()
    a["traffic"][2, 1] = np.nan


def _inactive_traffic(a: dict, m: dict) -> None:
    active = a["active"].copy()
    active[3, 2] = False
    a["active"] = active  # traffic[3, 2] > 0 stays


def _power_out_of_bounds(a: dict, m: dict) -> None:
    a["actions"] = a["actions"].copy()
    a["actions"][0, 0, 0] = 50.0


CORRUPTIONS = {
    "nan": (_nan_traffic, "traffic"),
    "dtype": (lambda a, m: a.__setitem__("traffic", a["traffic"].astype(np.float64)), "traffic"),
    "shape": (lambda a, m: a.__setitem__("actions", a["actions"][..., :3].copy()), "actions"),
    "missing": (lambda a, m: a.pop("od"), "od"),
    "power": (_power_out_of_bounds, "actions"),
    "inactive": (_inactive_traffic, "traffic"),
    "meta_key": (lambda a, m: m.pop("extent_m"), "metadata_json"),
    "meta_bounds": (lambda a, m: m.__setitem__("bounds", {}), "metadata_json"),
    "meta_extent": (lambda a, m: m.__setitem__("extent_m", "far"), "metadata_json"),
    "demand": (lambda a, m: a.__setitem__("demand", a["demand"] * 2 + 5), "demand"),
    "slot": (
        lambda a, m: a.__setitem__("slot_of_day", a["slot_of_day"][::-1].copy()),
        "slot_of_day",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_file_names_file_and_field(tmp_path: Path, make_record, raw_writer, case) -> None:
    edit, fieldname = CORRUPTIONS[case]
    arrays, meta = _raw(make_record(5, 20))
    edit(arrays, meta)
    path = raw_writer(tmp_path / f"bad-{case}.npz", arrays, meta)
    with pytest.raises(DatasetFormatError) as err:
        load_map(path)
    msg = str(err.value)
    assert path.name in msg, msg
    assert f"'{fieldname}'" in msg.replace(str(path), ""), msg


def test_non_json_metadata(tmp_path: Path, make_record, raw_writer) -> None:
    arrays, _ = _raw(make_record())
    path = raw_writer(tmp_path / "nojson.npz", arrays, b"{not json")
    with pytest.raises(DatasetFormatError, match=r"nojson\.npz.*metadata_json"):
        load_map(path)


def test_metadata_not_an_object(tmp_path: Path, make_record, raw_writer) -> None:
    arrays, _ = _raw(make_record())
    path = raw_writer(tmp_path / "list.npz", arrays, json.dumps([1, 2]).encode())
    with pytest.raises(DatasetFormatError, match=r"list\.npz.*metadata_json"):
        load_map(path)


def test_truncated_file(tmp_path: Path, make_record) -> None:
    path = save_map(make_record(), tmp_path / "cut.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match=r"cut\.npz"):
        load_map(path)


def test_not_an_archive(tmp_path: Path) -> None:
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(DatasetFormatError, match=r"text\.npz"):
        load_map(text)
    bare = tmp_path / "bare.npz"
    with open(bare, "wb") as f:
        np.save(f, np.zeros(3, np.float32))  # a single .npy array under an .npz name
    with pytest.raises(DatasetFormatError, match=r"bare\.npz"):
        load_map(bare)


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"nothere\.npz"):
        load_map(tmp_path / "nothere.npz")


def test_format_error_is_value_error() -> None:
    assert issubclass(DatasetFormatError, ValueError)
