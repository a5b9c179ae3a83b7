"""Tests of the weekly demand-profile table (``worldmodel.twin.profiles``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from worldmodel.twin import profiles as P
from worldmodel.twin.scenario import N_LANDUSE, SLOTS_PER_WEEK, LandUse

_ROOT = Path(__file__).resolve().parents[3]
REAL_TRACES = next(
    (
        p
        for p in (
            Path(os.environ.get("MOBIWM_TRACES", "/nonexistent")),
            _ROOT.parent / "shared" / "data" / "real-traffic",  # ../shared beside the checkout
        )
        if p.is_dir()
    ),
    Path("/nonexistent"),
)
"""Real traces: ``$MOBIWM_TRACES`` or ``../shared/data/real-traffic`` (tests skip without)."""


@pytest.fixture(scope="module")
def table() -> P.ProfileTable:
    return P.load_default_profiles()


def _hourly(shape: np.ndarray) -> np.ndarray:
    return P.hourly_means(shape).reshape(7, 24)


def _office_ratio(shape: np.ndarray) -> float:
    w = _hourly(shape)
    return float(w[:5, 9:17].mean() / w[5:, 9:17].mean())


# ------------------------------------------------------------------ shipped table
def test_table_shapes_and_dtypes(table: P.ProfileTable) -> None:
    k = table.n_profiles
    assert table.shapes.dtype == np.float32 and table.shapes.shape == (k, SLOTS_PER_WEEK)
    assert table.zone_profile.dtype == np.int64 and table.zone_profile.shape == (N_LANDUSE,)
    assert len(table.names) == k
    assert np.isfinite(table.shapes).all() and (table.shapes > 0).all()
    np.testing.assert_allclose(table.shapes.mean(axis=1, dtype=np.float64), 1.0, atol=1e-5)
    assert ((table.zone_profile >= 0) & (table.zone_profile < k)).all()
    zs = table.zone_shapes()
    assert zs.shape == (N_LANDUSE, SLOTS_PER_WEEK)
    for z in LandUse:
        np.testing.assert_array_equal(zs[int(z)], table.shapes[table.zone_profile[int(z)]])
    assert "MobiFM" in table.meta["credit"]


def test_zone_physics(table: P.ProfileTable) -> None:
    zs = table.zone_shapes()
    office, resid = zs[LandUse.OFFICE], zs[LandUse.RESIDENTIAL]
    # Offices are busy on weekday daytime and quiet on weekends, homes much less so.
    assert _office_ratio(office) > 1.5 * _office_ratio(resid)
    assert _office_ratio(office) > 1.5
    # Homes peak in the evening; offices do not.
    ho, hr = _hourly(office), _hourly(resid)
    assert hr[:, 19:23].mean() > ho[:, 19:23].mean()
    assert 18 <= int(np.argmax(hr[:5].mean(axis=0))) <= 23
    assert 8 <= int(np.argmax(ho[:5].mean(axis=0))) <= 16
    # Commercial areas are busier on weekends than on weekdays.
    hc = _hourly(zs[LandUse.COMMERCIAL])
    assert hc[5:].mean() > 1.1 * hc[:5].mean()


def test_daily_trough_is_early_morning(table: P.ProfileTable) -> None:
    """After hour alignment, the mean daily shape has its trough at 2-6 h local time."""
    daily = np.mean([_hourly(s).mean(axis=0) for s in table.shapes], axis=0)
    assert 2 <= int(np.argmin(daily)) <= 6
    assert daily.max() > 2.0 * daily.min()


def test_shapes_are_smooth_and_periodic(table: P.ProfileTable) -> None:
    """15-minute steps (including the Sunday→Monday wrap) stay small relative to the range."""
    s = table.shapes.astype(np.float64)
    steps = np.abs(np.diff(np.concatenate([s, s[:, :1]], axis=1), axis=1))
    assert steps.max() < 0.25 * (s.max(axis=1) - s.min(axis=1)).min() + 0.3
    wrap = np.abs(s[:, 0] - s[:, -1])
    assert (wrap <= steps[:, :-1].max(axis=1) + 1e-6).all()


def test_shipped_asset_matches_fresh_derivation(table: P.ProfileTable) -> None:
    if not REAL_TRACES.is_dir():
        pytest.skip(f"{REAL_TRACES} not available")
    fresh = P.derive_profiles(
        P.default_trace_paths(REAL_TRACES),
        n_profiles=int(table.meta["n_profiles"]),
        seed=int(table.meta["seed"]),
    )
    np.testing.assert_allclose(fresh.shapes, table.shapes, atol=1e-5)
    np.testing.assert_array_equal(fresh.zone_profile, table.zone_profile)
    assert fresh.names == table.names
    cities = fresh.meta["cities"]
    # NC is 30-minute data (daily period 48 samples) covering 84 h; after resampling it needs
    # no hour shift and its daily shape matches Nanjing's.
    assert cities["NCTCM30"]["samples_per_day"] == 48
    assert cities["NCTCM30"]["hour_shift"] == 0
    assert cities["NCTCM30"]["daily_shape_corr_with_reference"] > 0.95
    assert cities["NJTCH"]["samples_per_day"] == 24


def test_asset_files_are_small() -> None:
    total = sum(f.stat().st_size for f in P.ASSET_DIR.glob(f"{P.ASSET_STEM}.*"))
    assert 0 < total < 100_000
    side = json.loads((P.ASSET_DIR / f"{P.ASSET_STEM}.json").read_text())
    assert side["credit"] == P.CREDIT
    assert set(side["zone_profile"]) == {z.name for z in LandUse}


# ---------------------------------------------------------------------- I/O
def test_save_load_roundtrip(table: P.ProfileTable, tmp_path: Path) -> None:
    npz = P.save_profiles(table, tmp_path)
    back = P.load_profiles(npz)
    np.testing.assert_array_equal(back.shapes, table.shapes)
    np.testing.assert_array_equal(back.zone_profile, table.zone_profile)
    assert back.names == table.names and back.meta == table.meta
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demand_profiles.json",
        "demand_profiles.npz",
    ]


def _write_corrupt(table: P.ProfileTable, path: Path, **override: np.ndarray) -> Path:
    arrays = {
        "shapes": table.shapes,
        "zone_profile": table.zone_profile,
        "names": np.array(table.names),
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("field", "make"),
    [
        ("shapes", lambda t: t.shapes[:, :100]),
        ("shapes", lambda t: np.where(np.arange(672) == 5, np.nan, t.shapes).astype(np.float32)),
        ("shapes", lambda t: -t.shapes),
        ("shapes", lambda t: t.shapes.astype(np.float64)),
        ("shapes", lambda t: (2.0 * t.shapes).astype(np.float32)),
        ("zone_profile", lambda t: t.zone_profile[:3]),
        ("zone_profile", lambda t: t.zone_profile + 100),
        ("zone_profile", lambda t: t.zone_profile.astype(np.float32)),
        ("names", lambda t: np.array(t.names[:1])),
    ],
)
def test_corrupt_asset_raises(table: P.ProfileTable, tmp_path: Path, field: str, make) -> None:
    path = _write_corrupt(table, tmp_path / "bad.npz", **{field: make(table)})
    with pytest.raises(ValueError, match=field) as info:
        P.load_profiles(path)
    assert "bad.npz" in str(info.value)


def test_missing_field_and_garbage_file(table: P.ProfileTable, tmp_path: Path) -> None:
    path = tmp_path / "missing.npz"
    np.savez(path, shapes=table.shapes, names=np.array(table.names))
    with pytest.raises(ValueError, match="zone_profile"):
        P.load_profiles(path)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="junk.npz"):
        P.load_profiles(junk)


# ------------------------------------------------------------ resampling / derivation
def test_resample_preserves_smooth_signals() -> None:
    h = np.arange(168) + 0.5
    hourly = 1.0 + 0.5 * np.sin(2 * np.pi * h / 24.0)
    slots = P.resample_hourly_to_slots(hourly)
    t = (np.arange(672) + 0.5) / 4.0
    np.testing.assert_allclose(slots, 1.0 + 0.5 * np.sin(2 * np.pi * t / 24.0), atol=5e-3)
    np.testing.assert_allclose(P.resample_hourly_to_slots(np.full(168, 3.0)), 1.0)
    spiky = np.full(168, 0.01)
    spiky[10] = 50.0
    out = P.resample_hourly_to_slots(spiky)
    assert (out >= P.SHAPE_FLOOR * 0.99).all() and abs(out.mean() - 1.0) < 1e-9


def _synthetic_week(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True local-time weeks (Monday first) of n office and n residential cells [2n, 168]."""
    h = np.arange(24)
    resid = 1.0 - 0.6 * np.cos(2 * np.pi * (h - 4) / 24) + 0.6 * np.exp(-((h - 20) ** 2) / 4.0)
    office_wd = 0.15 + 2.0 * ((h >= 9) & (h < 17)) + 0.2 * np.exp(-((h - 13) ** 2) / 20)
    office_we = 0.15 + 0.3 * ((h >= 10) & (h < 16))
    office = np.concatenate([np.tile(office_wd, 5), np.tile(office_we, 2)])
    res = np.concatenate([np.tile(resid, 5), np.tile(resid * 1.2, 2)])
    scale = 10 ** rng.uniform(3, 6, size=(2 * n, 1))
    base = np.concatenate([np.tile(office, (n, 1)), np.tile(res, (n, 1))])
    x = base * rng.lognormal(0.0, 0.1, size=base.shape) * scale
    return x, base


def test_derivation_on_synthetic_traces(tmp_path: Path) -> None:
    """Sampling period, hour shift and weekend alignment are recovered from the content."""
    rng = np.random.default_rng(1)
    week, base = _synthetic_week(60, rng)
    time = np.zeros((week.shape[0], 168, 2), dtype=np.int32)
    time[..., 0] = np.arange(168) // 24
    time[..., 1] = np.arange(168) % 24
    # City A: hourly, local time, but the week starts on Saturday (weekend = data days 0, 1).
    np.savez(tmp_path / "A.npz", data=np.roll(week, 48, axis=1), time=time)
    # City B: hourly, full week, labelled in UTC (8 h behind local time).
    week_b, _ = _synthetic_week(60, rng)
    np.savez(tmp_path / "B.npz", data=np.roll(np.roll(week_b, 48, axis=1), -8, axis=1), time=time)
    # City C: 30-minute samples (168 of them = 84 h), mislabelled as hourly.
    half = np.repeat(week[:, :84], 2, axis=1) * rng.lognormal(0, 0.05, size=(week.shape[0], 168))
    np.savez(tmp_path / "C.npz", data=half, time=time)

    paths = [tmp_path / f"{c}.npz" for c in "ABC"]
    t = P.derive_profiles(paths, n_profiles=2, seed=0)
    cities = t.meta["cities"]
    assert [cities[c]["samples_per_day"] for c in "ABC"] == [24, 24, 48]
    assert [cities[c]["hour_shift"] for c in "ABC"] == [0, 8, 0]
    assert cities["C"]["hours_covered"] == 84 and not cities["C"]["used_for_clustering"]
    assert t.meta["weekend_data_days"] == [0, 1] and t.meta["day_roll"] == 5
    sizes = t.meta["cluster_sizes"]  # the 5 % of cells with the smallest means are dropped
    assert sum(sizes) == 2 * 120 - 12 and min(sizes) > 100
    office = t.zone_shapes()[LandUse.OFFICE]
    resid = t.zone_shapes()[LandUse.RESIDENTIAL]
    assert t.zone_profile[LandUse.OFFICE] != t.zone_profile[LandUse.RESIDENTIAL]
    true_office = base[0] / base[0].mean()
    np.testing.assert_allclose(P.hourly_means(office), true_office, atol=0.25)
    assert _office_ratio(office) > 3.0 and _office_ratio(resid) < 1.0


def test_derive_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no trace"):
        P.derive_profiles([])
    np.savez(tmp_path / "short.npz", data=np.ones((10, 100)))
    with pytest.raises(ValueError, match="full week"):
        P.derive_profiles([tmp_path / "short.npz"])
    np.savez(tmp_path / "nan.npz", data=np.full((10, 168), np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        P.derive_profiles([tmp_path / "nan.npz"])


def test_cli_writes_asset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    week, _ = _synthetic_week(40, rng)
    np.savez(tmp_path / "NJTCH.npz", data=week)
    out = tmp_path / "out"
    assert P.main(["--traces", str(tmp_path), "--out", str(out), "--n-profiles", "2"]) == 0
    text = capsys.readouterr().out
    assert "NJTCH" in text and "wd peak h" in text
    t = P.load_profiles(out / "demand_profiles.npz")
    assert t.n_profiles == 2
