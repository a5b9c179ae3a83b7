"""Every baseline controller runs on both backends (and on a GRU world model)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agents.baselines import BASELINES, EnvFacts, HeuristicController, make_controller
from agents.envs import EnvState, checkpoint_label, find_core, make_vector_env

STEPS = 2
MPC = {"n_candidates": 4, "n_iters": 2, "n_elites": 2, "horizon_steps": 2}


@pytest.fixture(params=["twin", "world_model", "gru"])
def backend(request, debug_checkpoint, gru_checkpoint):
    """``(backend, checkpoint)``: twin, MobiWM debug checkpoint, GRU checkpoint."""
    return {
        "twin": ("twin", None),
        "world_model": ("world_model", debug_checkpoint),
        "gru": ("world_model", gru_checkpoint),
    }[request.param]


@pytest.mark.parametrize("name", BASELINES)
def test_controller_runs_on_backend(name, backend, debug_checkpoint):
    kind, ckpt = backend
    venv = make_vector_env(kind, 2, ckpt, episode_steps=STEPS)
    options = {"checkpoint": debug_checkpoint, **MPC} if name == "mpc" else {}
    ctrl = make_controller(name, venv, **options)
    obs, info = venv.reset(seed=3)
    ctrl.reset()
    for t in range(STEPS):
        state = EnvState.from_env(venv) if t == 0 else None  # exact, then from obs/info
        act = ctrl.predict(obs, info, state)
        assert act.shape == venv.action_space.shape
        assert np.isfinite(act).all() and np.abs(act).max() <= 1.0
        obs, reward, _, trunc, info = venv.step(act)
        assert np.isfinite(reward).all()
    assert trunc.all()
    single = ctrl.predict(obs[0], {k: v[:1] for k, v in info.items()})
    assert single.shape == venv.single_action_space.shape
    venv.close()


def test_noop_keeps_parameters():
    venv = make_vector_env("twin", 1, episode_steps=2)
    ctrl = make_controller("noop", venv)
    obs, info = venv.reset(seed=0)
    before = venv.params.copy()
    venv.step(ctrl.predict(obs, info))
    np.testing.assert_array_equal(venv.params, before)


def test_heuristic_direction():
    """Overloaded cells tilt down / lower power; an under-loaded neighbour does the opposite."""
    venv = make_vector_env("twin", 1, episode_steps=2)
    facts = EnvFacts.from_env(venv)
    ctrl = HeuristicController(facts, deadband=0.1)
    obs, _ = venv.reset(seed=0)
    err = ctrl.load_error(obs)[0]
    act = ctrl.predict(obs).reshape(facts.max_cells, 4)[: facts.n_cells]
    over = err > 0.2
    assert over.any()
    assert (act[over, 3] > 0).all() and (act[over, 0] < 0).all()  # elec tilt down, power down
    pulled = act[:, 3] < 0
    assert (err[pulled] < -0.1).all()  # only under-loaded cells are up-tilted


def test_mpc_exact_state_matches_env(debug_checkpoint):
    """The planner's batched core reproduces the env's own world-model step from a snapshot."""
    venv = make_vector_env("world_model", 2, debug_checkpoint, episode_steps=4)
    obs, info = venv.reset(seed=1)
    venv.step(np.zeros(venv.action_space.shape, dtype=np.float32))
    state = EnvState.from_env(venv)
    ctrl = make_controller("mpc", venv, checkpoint=debug_checkpoint, **MPC)
    rng = np.random.default_rng(0)
    seq = rng.uniform(-1, 1, (2, 1, 1, ctrl.facts.n_cells, 4)).astype(np.float32)
    planned = ctrl.score(state, seq)[:, 0]
    _, reward, _, _, _ = venv.step(seq[:, 0, 0].reshape(2, -1))
    np.testing.assert_allclose(planned, reward, rtol=1e-5, atol=1e-4)


def _plan(ctrl, e: int, steps: int, seed: int = 0) -> np.ndarray:
    """Random plans ``[E, 1, steps, N, 4]`` in ``[-1, 1]``."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (e, 1, steps, ctrl.facts.n_cells, 4)).astype(np.float32)


def test_mpc_exact_state_carries_the_daily_memory(memory_checkpoint):
    """With a daily-memory model (the shipped layout), a snapshot of a world-model env carries
    the env's memory day, so a 2-step plan scores exactly what the env then returns. (The
    planner's own core, never reset, once read a memory of zeros.)"""
    venv = make_vector_env("world_model", 2, memory_checkpoint, episode_steps=8)
    venv.reset(seed=1)
    for _ in range(3):
        venv.step(np.zeros(venv.action_space.shape, dtype=np.float32))
    state = EnvState.from_env(venv)
    assert state.memory is not None and state.memory["traffic"].shape[1] == 96
    ctrl = make_controller("mpc", venv, checkpoint=memory_checkpoint, **MPC)
    seq = _plan(ctrl, 2, 2)
    planned = ctrl.score(state, seq)[:, 0]
    env_return = sum(venv.step(seq[:, 0, h].reshape(2, -1))[1] for h in range(2))
    np.testing.assert_allclose(planned, env_return, rtol=1e-5, atol=1e-4)


def test_mpc_from_a_twin_snapshot_reads_the_observed_yesterday(memory_checkpoint):
    """From a twin snapshot (no memory of its own) the planner's memory is the history's last
    day. For a plan shorter than a day that equals reading the window itself, i.e. the
    ``"predicted"`` memory mode, an independent path through ``MobiWM.rollout``."""
    venv = make_vector_env("twin", 2, episode_steps=8)
    venv.reset(seed=2)
    venv.step(np.random.default_rng(1).uniform(-1, 1, venv.action_space.shape).astype(np.float32))
    state = EnvState.from_env(venv)
    assert state.memory is None
    facts = EnvFacts.from_env(venv)
    observed = make_controller("mpc", facts, checkpoint=memory_checkpoint, **MPC)
    predicted = make_controller(
        "mpc",
        dataclasses.replace(facts, config=dataclasses.replace(facts.config, memory="predicted")),
        checkpoint=memory_checkpoint,
        **MPC,
    )
    seq = _plan(observed, 2, 2, seed=3)
    a, b = observed.score(state, seq), predicted.score(state, seq)
    assert observed._core.dynamics.season == 96 and predicted._core.dynamics.season == 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_world_model_memory_is_validated(memory_checkpoint):

    venv = make_vector_env("world_model", 2, memory_checkpoint, episode_steps=2)
    venv.reset(seed=0)
    dyn = find_core(venv).dynamics
    mem = dyn.memory_state()
    dyn.load_memory(**mem)  # round trip
    with pytest.raises(ValueError, match=r"memory traffic: expected shape \(2, 96, "):
        dyn.load_memory(mem["traffic"][:, :95], mem["params"], mem["start"])
    bad = mem["params"].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        dyn.load_memory(mem["traffic"], bad, mem["start"])


def test_checkpoint_labels(debug_checkpoint, gru_checkpoint, learned_checkpoints):
    assert checkpoint_label(debug_checkpoint) == "MobiWM"
    assert checkpoint_label(gru_checkpoint) == "GRU-WM"
    labels = {k: checkpoint_label(v) for k, v in learned_checkpoints.items()}
    assert labels == {"itransformer": "iTransformer-WM", "rssm": "RSSM-WM", "tdmpc": "TD-MPC2-WM"}


@pytest.mark.parametrize("name", ["itransformer", "rssm", "tdmpc"])
def test_learned_baselines_drive_the_env(name, learned_checkpoints):
    """Each learned baseline is a world-model env: it steps, its traffic is finite, zero at
    switched-off cells and moved by the actions (the model sees them)."""
    venv = make_vector_env(
        "world_model", 2, learned_checkpoints[name], episode_steps=3, randomize_params=False
    )
    obs, info = venv.reset(seed=1, options={"start_slot": 8 * 96})
    assert np.array_equal(obs[0], obs[1])  # both envs start from the same state
    act = np.zeros(venv.action_space.shape, dtype=np.float32)
    act[1] = 1.0  # env 1 raises every parameter, env 0 changes nothing
    obs, reward, term, trunc, info = venv.step(act)
    traffic = info["traffic"]
    assert traffic.shape[:2] == (2, 4) and np.isfinite(traffic).all() and (traffic >= 0).all()
    assert np.isfinite(reward).all()
    assert not np.allclose(traffic[0], traffic[1])  # same start, different actions
    venv.close()


def test_env_state_loads_into_a_twin_core():
    """A snapshot of a twin env continues bit-identically in another twin core (same fading)."""
    import copy

    src = make_vector_env("twin", 2, episode_steps=6)
    src.reset(seed=3)
    rng = np.random.default_rng(0)
    src.step(rng.uniform(-1, 1, src.action_space.shape).astype(np.float32))
    state = EnvState.from_env(src)
    assert state.association is not None
    dst = make_vector_env("twin", 2, episode_steps=6)
    dst.reset(seed=99)  # a different start
    core_src, core_dst = find_core(src), find_core(dst)
    state.load_into(core_dst)
    core_dst.dynamics.twin.rng = copy.deepcopy(core_src.dynamics.twin.rng)
    action = rng.uniform(-1, 1, src.action_space.shape).astype(np.float32)
    obs_a, rew_a, _, _, info_a = src.step(action)
    obs_b, rew_b, _, _, info_b = dst.step(action)
    np.testing.assert_array_equal(info_a["traffic"], info_b["traffic"])
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    bare = dataclasses.replace(state, association=None)
    with pytest.raises(ValueError, match="no twin association state"):
        bare.load_into(core_dst)


def test_env_state_carries_the_served_share_and_calibrates_a_world_model_core(debug_checkpoint):
    """A planner's world-model core loaded from a twin snapshot gets the twin's served share and
    a demand scale fitted to its own no-change prediction (as a world-model env at reset)."""

    src = make_vector_env("twin", 2, episode_steps=6)
    src.reset(seed=3)
    state = EnvState.from_env(src)
    assert state.served_ratio is not None and (state.served_ratio <= 1).all()
    np.testing.assert_array_equal(state.repeat(3).served_ratio, np.repeat(state.served_ratio, 3))
    dst = make_vector_env("world_model", 2, debug_checkpoint, episode_steps=6)
    dst.reset(seed=99)
    core = find_core(dst)
    state.load_into(core)
    np.testing.assert_array_equal(core.served_ratio, state.served_ratio)
    p = core.slots_per_step
    out = core.dynamics.step(core.params, core.hist_traffic, core.hist_params, core.slot, p)
    demand = core.demand_totals(core.slot[:, None] + np.arange(p)).sum(1)
    np.testing.assert_allclose(
        core.demand_scale * core.served_ratio * demand, out.traffic.sum(axis=(1, 2)), rtol=1e-9
    )
    assert find_core(src).demand_scale.tolist() == [1.0, 1.0]  # the twin never scales


def test_risk_aware_mpc_scores_sampled_rollouts(tmp_path):
    from tests.conftest import add_quantile_head, save_untrained_mobiwm

    ckpt = add_quantile_head(save_untrained_mobiwm(tmp_path / "wm", 1500.0))
    venv = make_vector_env("world_model", 2, ckpt, episode_steps=4)
    venv.reset(seed=1)
    state = EnvState.from_env(venv)
    neutral = make_controller("mpc", venv, checkpoint=ckpt, **MPC)
    plans = np.concatenate([_plan(neutral, 2, 2, seed=s) for s in range(3)], axis=1)
    exp = neutral.score(state, plans)
    std = make_controller("mpc", venv, checkpoint=ckpt, risk="std", kappa=0.0, risk_samples=4,
                          **MPC)  # fmt: skip
    a = std.score(state, plans)
    std.reset()
    assert np.array_equal(a, std.score(state, plans))  # seeded draws
    assert not np.allclose(a, exp)  # sampled traffic, not the point prediction
    averse = make_controller("mpc", venv, checkpoint=ckpt, risk="std", kappa=2.0,
                             risk_samples=4, **MPC)  # fmt: skip
    assert (averse.score(state, plans) < a).all()  # the spread is penalised
    cvar = make_controller("mpc", venv, checkpoint=ckpt, risk="cvar", alpha=0.25,
                           risk_samples=4, **MPC)  # fmt: skip
    assert (cvar.score(state, plans) <= a + 1e-9).all()  # the worst draw ≤ the mean
    act = averse.predict(*venv.reset(seed=2), state=EnvState.from_env(venv))
    assert act.shape == venv.action_space.shape
    for bad, msg in (({"risk": "max"}, "risk must be"), ({"kappa": -1.0}, "kappa"),
                     ({"risk": "std", "risk_samples": 1}, "risk_samples")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            make_controller("mpc", venv, checkpoint=ckpt, **bad)


def test_learned_baseline_env_scores_the_shortfall_against_its_own_no_change_rollout(
    gru_checkpoint,
):
    """A learned baseline's env has MobiWM's objective: with λ_U > 0 its shortfall is measured
    against the baseline's own rollout under the base parameters (plus the twin's unserved), so
    a no-change episode's shortfall is the twin's unserved traffic slot by slot."""
    kw = {"randomize_params": False, "episode_steps": 2, "lambda_unserved": 2.0}
    venv = make_vector_env("world_model", 2, gru_checkpoint, **kw)

    core = find_core(venv)
    assert core.reference is not None and core.reference.install is not None
    _, info = venv.reset(seed=5)
    length = core.offered.shape[1]
    assert length == 8 and np.isfinite(core.offered).all()
    base = core.scenario.init_params
    want = [
        core.source.get(int(s) + length, base, core.active).unserved[-length:] for s in info["slot"]
    ]
    short = []
    for _ in range(2):
        _, _, _, _, info = venv.step(np.zeros(venv.action_space.shape, np.float32))
        short.append(info["shortfall"])
    np.testing.assert_allclose(np.concatenate(short, axis=1), np.stack(want), rtol=1e-5, atol=1e-3)
    venv.close()
    plain = find_core(make_vector_env("world_model", 1, gru_checkpoint, episode_steps=2))
    assert plain.reference is None  # λ_U = 0: Eq. 21, no shortfall reference
