"""``MobiWM.compile_inference``: ``torch.compile`` of inference gives eager mode's results."""

from __future__ import annotations

import torch

from tests.worldmodel.model.test_model_memory import K, _args, _long_batch, _model


def test_a_compiled_rollout_equals_the_eager_one_and_training_stays_eager() -> None:
    # the shipped models' features: daily memory with its age, calibrated coverage prior over
    # candidate cells with a daily demand proxy, neighbour attention; a padded map
    model = _model(
        coverage_prior=True, coverage_daily_demand=True, coverage_calibrate=3,
        coverage_candidates=3, spatial_neighbours=4, memory_age=3, season_actions=True,
    )  # fmt: skip
    torch.nn.init.normal_(model.coverage.demand.fc2.weight, std=1.0)
    batch = _long_batch(seed=3, all_active=False, n_cells=(5, 7))
    eager = model.rollout(*_args(batch))
    model.compile_inference()
    assert model._compiled is not None and model.coverage._compiled is not None
    compiled = model.rollout(*_args(batch))
    assert compiled.shape == eager.shape == (2, K * 4, 7)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-3)  # MB
    assert not torch.equal(compiled[:, 4:], compiled[:, :-4])  # not a constant
    # a second call (the memory-age graph, same shapes) and a shorter rollout
    torch.testing.assert_close(model.rollout(*_args(batch, k=2)), eager[:, :8], rtol=1e-4,
                               atol=1e-3)  # fmt: skip
    # gradients never go through the compiled graph
    calls = []
    compiled_fn = model._compiled
    model._compiled = lambda *a, **k: calls.append(1) or compiled_fn(*a, **k)
    model.train()
    model(_batch_for_forward(batch)).sum().backward()
    assert not calls and model.head.weight.grad is not None
    model.compile_inference(False)
    assert model._compiled is None and model.coverage._compiled is None
    assert torch.equal(model.rollout(*_args(batch)), eager)


def _batch_for_forward(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first ``H + P`` slots of a long batch as a training batch."""
    out = dict(batch)
    t = 12 + 4
    for key in ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od"):
        out[key] = batch[key][:, :t]
    return out
