"""The shortfall term's offered demand on a world model: a no-change reference per start slot.

A world model predicts carried traffic, not demand, and its carried total is biased and drifts
over a rollout (the fast model: −19% on the test maps, ``docs/results.md``). Measured against
the twin's demand, its shortfall is mostly that bias; scaled once at reset
(``shortfall_reference="calibrated"``) it still drifts to ~15× the twin's unserved traffic over a
day, so "carry more traffic" pays far beyond the real headroom and a learner farms it.

``shortfall_reference="noop"`` (the default when ``lambda_unserved > 0``) measures the policy
against what the *same model* predicts when nothing changes. For an episode starting at slot ``s``, the offered demand of
episode slot ``k`` is::

    D̂_s(k) = Σ_cells ŝ⁰_s(k) + u⁰_s(k)

with ``ŝ⁰_s`` the world model's rollout from ``s`` under the scenario's base parameters (the
parameters the warm-up ran under) and ``u⁰_s`` the twin's unserved traffic over the same slots
under the same parameters. The model's bias and drift cancel between the policy's rollout and
the reference, and a no-change policy's shortfall is the twin's. References are batched
rollouts of a child core, computed the first time a start is drawn and kept per process for
every core of the same checkpoint, scenario, active cells and episode length (the random starts
are a finite set, ``start_weeks × 672 / slots_per_step``: a core with many envs computes them
all at its first reset, a few seconds; one with few envs, the starts it draws).

A core whose dynamics were replaced after construction (a learned baseline world model,
``agents.envs``) gets its reference with ``LoadBalanceCore.use_reference``, naming its checkpoint
and how to give a child core the same dynamics.

Episodes whose start is not the one they were reset with (a snapshot loaded by a planner,
``EnvState.load_into``) and episodes reset with their own base parameters (``options["params"]``)
fall back to the calibrated scale.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mobiwm_env.config import resolve_checkpoint
from mobiwm_env.dynamics import file_stamp

if TYPE_CHECKING:
    from mobiwm_env.core import LoadBalanceCore

_TABLES: OrderedDict[tuple, dict[int, np.ndarray]] = OrderedDict()
"""Process-wide references: key (``NoChangeReference.key``) → start slot → ``[L]`` MB."""


class NoChangeReference:
    """Offered demand per episode slot for start slots of one core (module doc).

    ``get(starts)`` returns ``[k, L]`` MB per slot, ``L = episode_steps × slots_per_step``,
    for start slots ``starts [k]``. Results are shared by every core with the same ``key``
    (switching cells off changes the key).
    """

    def __init__(
        self,
        core: LoadBalanceCore,
        batch: int = 64,
        checkpoint: str | Path | None = None,
        install: Callable[[LoadBalanceCore], None] | None = None,
    ) -> None:
        """``checkpoint``: the model the references depend on (default: the core's config's);
        ``install``: called on each child core after it is built, to give it the core's
        dynamics when they are not the config's (a learned baseline)."""
        self.core = core
        self.batch = int(batch)
        self.checkpoint = checkpoint
        self.install = install
        self.length = core.config.episode_steps * core.slots_per_step
        self._children: dict[int, LoadBalanceCore] = {}  # by batch size

    def key(self) -> tuple:
        """What the references depend on: the model (path and file stamps), the scenario, the
        active cells and the episode's shape."""
        core, cfg = self.core, self.core.config
        ckpt = resolve_checkpoint(cfg.checkpoint if self.checkpoint is None else self.checkpoint)
        directory = ckpt.parent if ckpt.is_file() else ckpt
        return (
            str(directory.resolve()),
            file_stamp(directory),
            id(core.scenario),
            core.active.tobytes(),
            cfg.episode_steps,
            cfg.slots_per_step,
            cfg.warmup_slots,
            cfg.memory,
        )

    @property
    def table(self) -> dict[int, np.ndarray]:
        key = self.key()
        table = _TABLES.get(key)
        if table is None:
            table = _TABLES[key] = {}
            while len(_TABLES) > 8:
                _TABLES.popitem(last=False)
        else:
            _TABLES.move_to_end(key)
        return table

    def __len__(self) -> int:
        return len(self.table)

    def get(self, starts: np.ndarray) -> np.ndarray:
        table = self.table
        wanted = [int(s) for s in np.asarray(starts, dtype=np.int64).ravel()]
        missing = sorted(set(wanted) - set(table))
        for i in range(0, len(missing), self.batch):
            table.update(self._compute(missing[i : i + self.batch]))
        return np.stack([table[s] for s in wanted]) if wanted else np.zeros((0, self.length))

    def _child(self, n: int) -> LoadBalanceCore:
        """A core of ``n`` envs with the same model and map, no randomisation, no shortfall
        reference of its own (kept for later batches of the same size)."""
        from mobiwm_env.core import LoadBalanceCore

        core = self.core
        child = self._children.get(n)
        if child is None:
            cfg = dataclasses.replace(
                core.config,
                scenario=core.scenario,
                shortfall_reference="demand",
                randomize_params=False,
                compile=False,
                uncertainty="off",
                lambda_unserved=0.0,
            )
            child = self._children[n] = LoadBalanceCore(cfg, n_envs=n)
            if self.install is not None:
                self.install(child)
        if not np.array_equal(child.active, core.active):
            child.set_active(core.active)
        return child

    def _compute(self, starts: list[int]) -> dict[int, np.ndarray]:
        """One batched no-change rollout of a child core over ``starts``."""
        core = self.core
        child = self._child(len(starts))
        base = core.scenario.init_params.astype(np.float64)
        rng = np.random.default_rng(0)  # unused: no randomisation, explicit start slots
        for j, s in enumerate(starts):
            child.reset(np.array([j]), [rng], {"start_slot": s, "params": base})
        p, steps = core.slots_per_step, core.config.episode_steps
        carried = np.zeros((len(starts), self.length))
        zero = np.zeros((len(starts), child.max_cells * 4), dtype=np.float32)
        for t in range(steps):
            _, _, _, info = child.step(zero)
            carried[:, t * p : (t + 1) * p] = info["traffic"].sum(axis=-1)
        unserved = self._twin_unserved(starts, base)
        return {s: carried[j] + unserved[j] for j, s in enumerate(starts)}

    def _twin_unserved(self, starts: list[int], base: np.ndarray) -> np.ndarray:
        """``[k, L]`` the twin's unserved traffic over each episode under ``base``: read from
        the warm-ups that end after it (each covers ``warmup_slots`` slots)."""
        core = self.core
        w = core.config.warmup_slots
        out = np.zeros((len(starts), self.length))
        for a in range(0, self.length, w):
            b = min(a + w, self.length)
            ends = [s + b for s in starts]
            warm = core.source.get_many(ends, base, core.active)
            for j, wu in enumerate(warm):
                out[j, a:b] = wu.unserved[w - (b - a) :]
        return out
