"""The numba kernels of the twin equal the numpy reference bit for bit; the fading prefetch
changes nothing but the timing."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import worldmodel.twin.network as network
from tests.worldmodel.twin.conftest import ConstantDemand, make_toy_scenario
from worldmodel.twin.antenna import AntennaConfig, element_gain_from_trig
from worldmodel.twin.association import A3State, a3_step, top2
from worldmodel.twin.kernels import a3_traffic, link_parts, scan_config
from worldmodel.twin.network import NetworkTwin
from worldmodel.twin.scenario import AZIMUTH, ELEC_TILT, MECH_TILT, POWER


def _random_params(rng: np.random.Generator, sc, n_envs: int) -> np.ndarray:
    low, high = sc.bounds.low_high()
    p = np.empty((n_envs, sc.n_cells, 4))
    for j in (POWER, MECH_TILT, ELEC_TILT):
        p[..., j] = rng.uniform(low[j], high[j], p.shape[:2])
    p[..., AZIMUTH] = rng.uniform(0.0, 360.0, p.shape[:2])
    return p


def _twin(sc, n_envs: int, antenna: AntennaConfig | None = None, seed: int = 0) -> NetworkTwin:
    return NetworkTwin(sc, n_envs, demand=ConstantDemand(sc.grid_px**2), antenna=antenna, seed=seed)


def test_element_gain_and_phase_bitwise_equal_numpy():
    twin = _twin(make_toy_scenario(), 3)
    rng = np.random.default_rng(0)
    twin.set_params(_random_params(rng, twin.scenario, 3))
    m = 50_000
    env = rng.integers(0, 3, m)
    pix = rng.integers(0, twin.n_pixels, m)
    col = rng.integers(0, twin.n_candidates, m)
    cfg = twin._scan_cfg
    gain, half = link_parts(env, pix, col, twin._cand, twin._cos_zen, twin._sin_zen,
                            twin._cos_bear, twin._sin_bear, twin._cell, cfg.consts)  # fmt: skip
    link = pix * twin.n_candidates + col
    cells = twin._cand[pix, col]
    ref_gain, ref_half = element_gain_from_trig(
        twin._cos_zen[link], twin._sin_zen[link], twin._cos_bear[link], twin._sin_bear[link],
        *(twin._cell[row, cells, env] for row in range(1, 6)), twin.antenna,
    )  # fmt: skip
    np.testing.assert_array_equal(gain, ref_gain)
    np.testing.assert_array_equal(half, ref_half)


@pytest.fixture(params=["vector", "scalar"])
def scan_path(request, monkeypatch) -> str:
    """Scan links vectorised across copies, or one copy at a time."""
    monkeypatch.setattr(network, "_VECTOR_COPIES", 1 if request.param == "vector" else 1 << 30)
    return request.param


@pytest.mark.parametrize(
    "antenna",
    [
        None,
        AntennaConfig(n_vertical=5, null_fill_db=-30.0, spacing_wavelengths=0.5),
        AntennaConfig(n_vertical=1),
        AntennaConfig(n_vertical=20),
    ],  # fmt: skip
    ids=["default", "5-elements", "1-element", "20-elements-all-survive"],
)
def test_top_two_equal_dense_numpy(antenna, scan_path):
    sc = make_toy_scenario()
    twin = _twin(sc, 4, antenna)
    rng = np.random.default_rng(1)
    params = _random_params(rng, sc, 4)
    params[0] = sc.init_params  # one copy at the tidy initial plan (near-symmetric links)
    active = rng.uniform(size=(4, sc.n_cells)) > 0.2
    active[3] = False
    active[3, 5] = True  # a copy with a single cell on: second column at -inf
    twin.set_params(params, active)
    if antenna is not None and antenna.n_vertical > 16:
        assert np.isinf(twin._scan_cfg.margin_db)
    else:
        assert twin._scan_cfg.err_db < 2e-3
    for e in range(4):
        cols, vals = top2(twin.rsrp(e)[None])
        np.testing.assert_array_equal(twin._top_vals[e], vals[0])
        finite = np.isfinite(vals[0])
        np.testing.assert_array_equal(twin._top_cols[e][finite], cols[0][finite])


def test_incremental_refresh_equals_full_refresh(scan_path):
    sc = make_toy_scenario()
    twin, fresh = _twin(sc, 3), _twin(sc, 3)
    rng = np.random.default_rng(2)
    params = _random_params(rng, sc, 3)
    twin.set_params(params)
    params[1, [2, 17], POWER] = [30.0, 46.0]
    params[2, 9, AZIMUTH] += 40.0
    assert twin.set_params(params).sum() == 3
    fresh.set_params(params)
    np.testing.assert_array_equal(twin._top_vals, fresh._top_vals)
    np.testing.assert_array_equal(twin._top_cols, fresh._top_cols)


@pytest.mark.parametrize("shared", [False, True])
def test_a3_traffic_equals_a3_step_and_bincount(shared):
    rng = np.random.default_rng(3 + shared)
    e, p, k, n = 5, 4000, 6, 11
    cand = rng.integers(0, n, (p, k)).astype(np.int32)
    vals = np.sort(rng.normal(-100.0, 15.0, (e, p, 2)).astype(np.float32), axis=-1)[..., ::-1]
    vals = np.ascontiguousarray(vals)
    vals[0, :50, 1] = -np.inf
    vals[1, :30] = -np.inf
    cols = np.stack([rng.permutation(k)[:2] for _ in range(e * p)]).reshape(e, p, 2)
    cols = cols.astype(np.int32)
    serving_rsrp = rng.normal(-105.0, 15.0, (e, p)).astype(np.float32)
    fading = rng.normal(0.0, 2.0, (3, 1 if shared else e, p)).astype(np.float32)
    dens = rng.uniform(0.0, 3.0, (2, p)).astype(np.float32)
    row = np.array([0, 1, 1, 0, 1])
    state = A3State(
        rng.integers(-1, k, (e, p)).astype(np.int32),
        rng.integers(-1, k, (e, p)).astype(np.int32),
        rng.integers(0, 2, (e, p)).astype(np.int32),
    )
    ref = copy.deepcopy(state)
    q, hyst, off, ttt = -110.0, 2.0, 1.0, 2
    ho_ref = a3_step(ref, cols, vals, serving_rsrp, q, hyst, off, ttt, fading)
    served = ref.serving_col >= 0
    cell = np.take_along_axis(
        np.broadcast_to(cand, (e, p, k)), np.maximum(ref.serving_col, 0)[..., None], -1
    )[..., 0]
    flat = np.where(served, cell + (np.arange(e) * n)[:, None], 0).ravel()
    traffic_ref = np.bincount(flat, np.where(served, dens[row], 0.0).ravel(), e * n).reshape(e, n)

    acc = np.zeros((e, n))
    ho, n_un = np.empty(e, np.int64), np.empty(e, np.int64)
    a3_traffic(state.serving_col, state.target_col, state.ttt_count, cols, vals, serving_rsrp,
               fading, cand, dens, row, np.float32(q), np.float32(hyst), np.float32(off), ttt,
               acc, ho, n_un)  # fmt: skip
    for name in ("serving_col", "target_col", "ttt_count"):
        np.testing.assert_array_equal(getattr(state, name), getattr(ref, name), err_msg=name)
    np.testing.assert_array_equal(ho, ho_ref)
    np.testing.assert_array_equal(n_un, (~served).sum(1))
    np.testing.assert_array_equal(acc.astype(np.float32), traffic_ref.astype(np.float32))
    assert ho.sum() > 0 and n_un.sum() > 0


def test_scan_margin_covers_the_approximation():
    cfg = scan_config(AntennaConfig())
    assert cfg.err_db < 1e-3 and cfg.margin_db > 2.0 * cfg.err_db
    assert cfg.gain_max_db >= 8.0 + 10.0 * np.log10(8.08)


# ---------------------------------------------------------------------------- prefetch
def _pair(monkeypatch, sc, n_envs=4, seed=5):
    """Two identical twins; only the first prefetches its fading (threshold lowered)."""
    monkeypatch.setattr(network, "_PREFETCH_MIN", 0)
    fast = _twin(sc, n_envs, seed=seed)
    plain = _twin(sc, n_envs, seed=seed)
    take = fast._fading.take
    fast.hits = []

    def counted(*args):
        out = take(*args)
        fast.hits.append(out is not None)
        return out

    fast._fading.take = counted
    return fast, plain


def _step_both(fast, plain, n_slots, params=None):
    if params is not None:
        fast.set_params(params)
        plain.set_params(params)
    a = fast.step(n_slots)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(network, "_PREFETCH_MIN", 1 << 62)
        b = plain.step(n_slots)
    for name in ("traffic", "unserved", "handovers"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert fast.rng.bit_generator.state == plain.rng.bit_generator.state


def test_prefetched_fading_is_the_same_draw(monkeypatch):
    sc = make_toy_scenario(fading_db=2.0)
    fast, plain = _pair(monkeypatch, sc)
    rng = np.random.default_rng(6)
    for _ in range(3):
        _step_both(fast, plain, 3, _random_params(rng, sc, 4))
    assert fast.hits == [False, True, True]
    assert fast._fading._job is not None  # a draw is pending for the next step
    # a different step length, a new generator, an outside draw: the pending draw is dropped
    _step_both(fast, plain, 2)
    fast.rng, plain.rng = np.random.default_rng(9), np.random.default_rng(9)
    _step_both(fast, plain, 2)
    fast.rng.standard_normal(7)
    plain.rng.standard_normal(7)
    _step_both(fast, plain, 2)
    state = fast.get_state()
    _step_both(fast, plain, 2)
    fast.set_state(state)
    plain.set_state(state)
    _step_both(fast, plain, 2)
    assert fast.hits == [False, True, True, False, False, False, True, False]


def test_twin_with_pending_draw_copies_and_continues_identically(monkeypatch):
    sc = make_toy_scenario(fading_db=2.0)
    fast, plain = _pair(monkeypatch, sc)
    _step_both(fast, plain, 2)
    clone = copy.deepcopy(fast)
    assert clone._fading._job is None
    _step_both(clone, plain, 2)
