"""The realism scorecard's statistics on synthetic series with known values, and its CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from worldmodel.twin import realism as R

DAY = 24
WEEK = 7 * DAY


def periodic(cells: int, days: int = 7, scale: np.ndarray | None = None) -> np.ndarray:
    """Every cell repeats the same daily shape 1 + 0.5 sin (peak 1.5, trough 0.5)."""
    h = np.arange(days * DAY)
    shape = 1.0 + 0.5 * np.sin(2 * np.pi * h / DAY)
    s = np.ones(cells) if scale is None else scale
    return s[:, None] * shape[None]


def test_spread_of_cell_means() -> None:
    means = np.arange(1.0, 11.0)  # 1..10
    st = R.series_stats(R.Series("x", periodic(10, scale=means)))
    assert st["cv_means"] == pytest.approx(means.std() / means.mean())
    p10, p90 = np.percentile(means, [10, 90])
    assert st["p90_p10"] == pytest.approx(p90 / p10)


def test_a_periodic_series_is_perfectly_predictable_from_yesterday() -> None:
    st = R.series_stats(R.Series("x", periodic(4)))
    assert st["peak_trough"] == pytest.approx(1.5 / 0.5, rel=1e-3)
    assert st["day_change"] == pytest.approx(0.0, abs=1e-12)
    assert st["day_corr"] == pytest.approx(1.0)
    assert st["acf24"] == pytest.approx(1.0, abs=0.05)  # lag-24 pairs over 6 of 7 days
    assert st["zero_share"] == 0.0
    # mean |x_t - x_t-1| of 1 + 0.5 sin: (2 * 1.0 per day, sum of |d sin|) / 24 h
    h = np.arange(WEEK)
    expected = np.abs(np.diff(0.5 * np.sin(2 * np.pi * h / DAY))).mean()
    assert st["hour_change"] == pytest.approx(expected)


def test_alternating_series_hour_change_and_lag1() -> None:
    x = np.tile([0.5, 1.5], (3, WEEK // 2))
    st = R.series_stats(R.Series("x", x))
    assert st["hour_change"] == pytest.approx(1.0)
    assert st["acf1"] == pytest.approx(-1.0, abs=0.01)


def test_zero_share_counts_hours_at_or_below_the_threshold() -> None:
    x = periodic(5)
    x[0, :DAY] = 0.0  # 24 of 5 * 168 hours
    st = R.series_stats(R.Series("x", x))
    assert st["zero_share"] == pytest.approx(DAY / (5 * WEEK))
    st = R.series_stats(R.Series("x", x, zero_below=10.0))
    assert st["zero_share"] == 1.0


def test_weekday_weekend_ratio_follows_start_day() -> None:
    x = periodic(3)
    x[:, 5 * DAY :] *= 0.5  # days 5-6 at half level
    assert R.series_stats(R.Series("x", x, start_day=0))["weekday_weekend"] == pytest.approx(2.0)
    # the same data starting on a Saturday: the low days are now weekdays
    r = R.series_stats(R.Series("x", x, start_day=5))["weekday_weekend"]
    assert r < 1.0
    short = R.series_stats(R.Series("x", periodic(3, days=3)))
    assert math.isnan(short["weekday_weekend"])


def test_independent_noise_days_are_uncorrelated() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(4.0, 0.25, (400, WEEK))
    st = R.series_stats(R.Series("x", x))
    assert abs(st["day_corr"]) < 0.05 and abs(st["acf1"]) < 0.05 and abs(st["acf24"]) < 0.05
    assert st["hour_change"] == pytest.approx(st["day_change"], rel=0.05)


def test_jsd_bounds_and_histogram() -> None:
    p = np.array([0.5, 0.5, 0.0])
    assert R.jsd(p, p) == 0.0
    assert R.jsd(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    h = R.value_histogram(np.ones((3, 48)))  # every value is exactly the cell mean
    assert h.sum() == pytest.approx(1.0) and h[np.searchsorted(R.HIST_EDGES, 1.0, "right") - 1] == 1


def test_bounds_from_reference_rows() -> None:
    rows = [dict.fromkeys(R.STAT_KEYS, 1.0), dict.fromkeys(R.STAT_KEYS, 2.0)]
    rows[1]["weekday_weekend"] = math.nan  # a short trace has no weekend
    b = R.bounds_from(rows, city_jsd=0.01)
    assert b["cv_means"] == (0.75, 2.5)
    assert b["day_corr"] == (0.9, 2.1)
    assert b["weekday_weekend"] == (0.75, 1.25)
    assert b["value_jsd"] == (0.0, pytest.approx(0.0125))


def test_series_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="hours >= 48"):
        R.Series("x", np.ones((3, 10)))
    with pytest.raises(ValueError, match="finite and >= 0"):
        R.Series("x", -np.ones((3, 48)))


def _write_trace(path: Path, x: np.ndarray) -> None:
    np.savez(path, data=x, time=np.zeros(x.shape + (2,), np.int32))


def _write_map(path: Path, traffic: np.ndarray, active: np.ndarray) -> None:
    t = traffic.shape[0]
    np.savez(path, traffic=traffic, slot=np.arange(t), active=active)


def test_map_series_sums_hours_and_drops_cells_mostly_off(tmp_path: Path) -> None:
    t, n = 2 * 96, 3
    traffic = np.ones((t, n), np.float32)
    active = np.ones((t, n), bool)
    active[: t // 2 + 4, 2] = False  # cell 2 is on air for less than half of the slots
    _write_map(tmp_path / "urban-para-test-000.npz", traffic, active)
    s = R.map_series(tmp_path / "urban-para-test-000.npz")
    assert s.x.shape == (2, 48) and np.all(s.x == 4.0) and s.start_day == 0
    assert R.scenario_of(tmp_path / "urban-para-test-000.npz") == "urban-para"
    np.savez(tmp_path / "other.npz", data=np.ones((3, 48)))
    with pytest.raises(ValueError, match=r"other.npz: not a generated map, missing arrays"):
        R.map_series(tmp_path / "other.npz")


def test_cli_prints_every_file_and_scenario_and_writes_json(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    traces = tmp_path / "traces"
    traces.mkdir()
    base = periodic(50, scale=rng.lognormal(0, 1, 50))
    _write_trace(traces / "NJTCH.npz", base * rng.gamma(2, 0.5, base.shape))
    _write_trace(traces / "NCTCM30.npz", base * rng.gamma(2, 0.5, base.shape))
    data = tmp_path / "maps"
    data.mkdir()
    for i in range(2):
        tr = np.repeat(periodic(6).T / 4, 4, axis=0) * rng.gamma(9, 1 / 9, (4 * WEEK, 6))
        _write_map(data / f"hex-para-test-00{i}.npz", tr, np.ones(tr.shape, bool))
    out = tmp_path / "card.json"
    rc = R.main(["--traces", str(traces), "--data", str(data), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "NJTCH" in text and "NCTCM30" in text and "hex-para" in text and "✓" in text
    card = json.loads(out.read_text())
    assert set(card["twin"]) == {"hex-para"} and card["reference"] == ["NJTCH", "NCTCM30"]
    assert set(card["pass"]["hex-para"]) == set(R.STAT_KEYS)
    # --fail-outside turns a failing scorecard into exit status 1
    assert R.main(["--traces", str(traces), "--data", str(data), "--fail-outside"]) == 1


def test_cli_errors_name_the_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        R.main(["--traces", str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="reference traces"):
        _write_trace(tmp_path / "OTHER.npz", periodic(5, scale=np.arange(1.0, 6.0)))
        R.scorecard([tmp_path / "OTHER.npz"])
