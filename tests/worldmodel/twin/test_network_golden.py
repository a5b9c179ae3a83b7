"""Golden reference: the batched twin on hex57 reproduces a stored run bit for bit (float32).

The fixture ``data/twin_golden.npz`` was produced by ``make_golden()`` from the twin as it was
before the fast-path rewrite (commit 6e9434c). Scenario: 3 copies on hex57 starting at
different slots; every step sets new parameters for all 57 cells of every copy (random walk
within the bounds, once fully random), then runs 4 slots. Steps 5–6 switch cells off (and on
again), step 7 changes only two cells of copy 1 (the incremental path), step 8 changes
nothing. A second twin with ``common_fading=True`` runs 2 copies for 3 steps.

Regenerate (only when the twin's physics are meant to change)::

    python -m tests.worldmodel.twin.test_network_golden
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import worldmodel.twin.network as network
from worldmodel.twin.builders import get_scenario
from worldmodel.twin.network import NetworkTwin
from worldmodel.twin.scenario import AZIMUTH, ELEC_TILT, MECH_TILT, POWER

GOLDEN = Path(__file__).parent / "data" / "twin_golden.npz"
MAX_STEP = np.array([2.0, 10.0, 2.0, 2.0])  # power dB, azimuth °, mech./elec. tilt °
RSRP_PIXELS = 400  # pixels of copy 0 whose full candidate RSRP row is stored at the end


def _random_walk(rng: np.random.Generator, params: np.ndarray, sc) -> np.ndarray:
    """Every cell of every copy moves by up to ``MAX_STEP`` (clipped to the bounds)."""
    low, high = sc.bounds.low_high()
    new = params + rng.uniform(-1.0, 1.0, params.shape) * MAX_STEP
    for j in (POWER, MECH_TILT, ELEC_TILT):
        new[..., j] = np.clip(new[..., j], low[j], high[j])
    new[..., AZIMUTH] %= 360.0
    return new


def _fully_random(rng: np.random.Generator, shape: tuple[int, ...], sc) -> np.ndarray:
    low, high = sc.bounds.low_high()
    out = np.empty((*shape, 4))
    for j in (POWER, MECH_TILT, ELEC_TILT):
        out[..., j] = rng.uniform(low[j], high[j], shape)
    out[..., AZIMUTH] = rng.uniform(0.0, 360.0, shape)
    return out


def _record(rec: dict[str, list], prefix: str, twin: NetworkTwin, out) -> None:
    for name in ("traffic", "unserved", "demand", "handovers"):
        rec.setdefault(f"{prefix}{name}", []).append(getattr(out, name))
    rec.setdefault(f"{prefix}serving", []).append(twin.serving_cell().astype(np.int8))


def make_golden() -> dict[str, np.ndarray]:
    """Run the golden scenario on the current twin; arrays keyed by name (see module doc)."""
    sc = dataclasses.replace(get_scenario("hex57"), demand="smooth")  # as when it was recorded
    rng = np.random.default_rng(20240611)
    e, n = 3, sc.n_cells
    twin = NetworkTwin(sc, n_envs=e, seed=11)
    twin.reset(slot=np.array([268, 268 + 96 * 3 + 40, 1000]))
    rec: dict[str, list] = {}
    params = twin.params.copy()
    active = twin.active.copy()
    for step in range(9):
        if step == 3:
            params = _fully_random(rng, (e, n), sc)
        elif step == 7:  # incremental path: two cells of copy 1 only
            params = params.copy()
            params[1, [4, 30], POWER] = [31.0, 45.5]
            params[1, 30, ELEC_TILT] = 11.0
        elif step < 7:
            params = _random_walk(rng, params, sc)
        if step == 5:
            active = rng.uniform(size=(e, n)) > 0.15
        elif step == 6:
            active = np.ones((e, n), dtype=bool)
            active[0, :20] = False  # a patch of the map without service in copy 0
        twin.set_params(params, active)
        _record(rec, "", twin, twin.step(4))
    state = twin.get_state()
    out = {k: np.stack(v, axis=1) for k, v in rec.items()}  # [E, steps, ...]
    out["final_params"] = twin.params.copy()
    for name in ("target_col", "ttt_count"):
        out[f"final_{name}"] = np.asarray(getattr(state, name)).astype(np.int8)
    pix = np.random.default_rng(3).choice(twin.n_pixels, RSRP_PIXELS, replace=False)
    out["rsrp_pixels"] = pix
    out["rsrp"] = twin.rsrp(0)[pix].copy()

    common = NetworkTwin(sc, n_envs=2, seed=5, common_fading=True)
    common.reset(slot=500)
    rec = {}
    for _ in range(3):
        p = _random_walk(rng, common.params.copy(), sc)
        common.set_params(p)
        _record(rec, "common_", common, common.step(4))
    out.update({k: np.stack(v, axis=1) for k, v in rec.items()})
    return out


@pytest.fixture(scope="module", params=["vector", "scalar"])
def runs(request) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(stored, rerun) with the links scanned vectorised across copies or one copy at a time."""
    if not GOLDEN.is_file():
        pytest.fail(f"missing golden fixture {GOLDEN}; see the module docstring to regenerate it")
    with np.load(GOLDEN) as z:
        golden = {k: z[k] for k in z.files}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(network, "_VECTOR_COPIES", 1 if request.param == "vector" else 1 << 30)
        return golden, make_golden()


def test_golden_keys_and_shapes(runs):
    golden, now = runs
    assert sorted(golden) == sorted(now)
    for k in golden:
        assert golden[k].shape == now[k].shape, k


@pytest.mark.parametrize("prefix", ["", "common_"])
def test_golden_association_identical(runs, prefix):
    golden, now = runs
    for name in ("serving", "handovers"):
        a, b = golden[f"{prefix}{name}"], now[f"{prefix}{name}"]
        mismatch = float(np.mean(a != b))
        assert mismatch == 0.0, f"{prefix}{name}: {mismatch:.2e} of entries differ"


@pytest.mark.parametrize("prefix", ["", "common_"])
def test_golden_traffic_within_float32(runs, prefix):
    golden, now = runs
    scale = float(golden[f"{prefix}traffic"].max())
    for name in ("traffic", "unserved", "demand"):
        np.testing.assert_allclose(
            now[f"{prefix}{name}"], golden[f"{prefix}{name}"], rtol=1e-5, atol=1e-6 * scale,
            err_msg=f"{prefix}{name}",
        )  # fmt: skip


def test_golden_final_state_and_rsrp(runs):
    golden, now = runs
    np.testing.assert_array_equal(now["final_params"], golden["final_params"])
    for name in ("final_target_col", "final_ttt_count", "rsrp_pixels"):
        np.testing.assert_array_equal(now[name], golden[name], err_msg=name)
    np.testing.assert_allclose(now["rsrp"], golden["rsrp"], rtol=1e-6, atol=1e-4)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    data = make_golden()
    np.savez_compressed(GOLDEN, **data)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1024:.0f} KiB)")
    for key, arr in data.items():
        print(f"  {key:24s} {arr.dtype!s:8s} {arr.shape}")
