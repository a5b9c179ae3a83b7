"""Traffic normaliser and fixed input normalisations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodel.model.normalize import (
    TrafficNormalizer,
    normalize_actions,
    normalize_counts,
    paired_delta_loss,
)


def test_fit_and_round_trip() -> None:
    rng = np.random.default_rng(0)
    traffic = rng.lognormal(2.0, 1.0, size=(50, 20)).astype(np.float32)
    active = rng.random((50, 20)) > 0.2
    traffic[~active] = 0.0
    norm = TrafficNormalizer()
    assert not norm.is_fitted
    stats = norm.fit(traffic, active)
    assert norm.is_fitted
    assert stats["scale"] == pytest.approx(float(np.median(traffic[active])), rel=1e-6)
    z = norm.normalize(torch.from_numpy(traffic))
    assert abs(float(z[torch.from_numpy(active)].mean())) < 1e-4
    assert float(z[torch.from_numpy(active)].std()) == pytest.approx(1.0, rel=1e-2)
    back = norm.denormalize(z)
    torch.testing.assert_close(back, torch.from_numpy(traffic), rtol=1e-4, atol=1e-4)
    assert float(norm.denormalize(norm.zero_level())) == pytest.approx(0.0, abs=1e-5)
    assert (norm.denormalize(torch.full((3,), -50.0)) >= 0).all()


def test_fit_rejects_bad_input() -> None:
    norm = TrafficNormalizer()
    with pytest.raises(ValueError, match=">= 0"):
        norm.fit(np.array([1.0, -2.0]))
    with pytest.raises(ValueError, match="no finite"):
        norm.fit(np.array([1.0, 2.0]), np.array([False, False]))
    with pytest.raises(ValueError, match="shape"):
        norm.fit(np.ones((2, 3)), np.ones((3, 2), dtype=bool))


def test_action_features() -> None:
    actions = torch.tensor(
        [[38.0, 90.0, 7.5, 6.0], [46.0, 450.0, 15.0, 12.0], [30.0, 0.0, 0.0, 0.0]]
    )
    active = torch.tensor([True, True, False])
    f = normalize_actions(actions, active)
    assert f.shape == (3, 6)
    torch.testing.assert_close(
        f[0], torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        f[1], torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(f[2], torch.zeros(6))  # switched off: parameters carry nothing


def test_counts() -> None:
    c = normalize_counts(torch.tensor([0.0, float(np.e) - 1.0, -3.0, float("nan")]), 2.0)
    torch.testing.assert_close(c, torch.tensor([0.0, 0.5, 0.0, 0.0]))


def test_paired_delta_loss_scores_the_difference_only() -> None:
    norm = TrafficNormalizer()
    norm.set_stats(scale=1.0, mean=0.0, std=1.0)
    traffic = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[1.0, 2.0, 3.0], [5.0, 5.0, 9.0]]])
    batch = {  # B=2 windows (a map and its branch), H=1, P=1, N=3; cell 2 off in row 1
        "traffic": traffic,
        "active": torch.tensor([[[True] * 3] * 2, [[True, True, True], [True, True, False]]]),
        "cell_mask": torch.ones(2, 3, dtype=torch.bool),
    }
    target = norm.normalize(traffic[:, 1:])
    pairs = torch.tensor([[0, 1]])
    # a common error in both rows leaves the difference exact: zero pair loss
    loss, m = paired_delta_loss(norm, batch, target + 0.7, pairs)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and m["pair_mse"] == float(loss)
    # predicting "no action effect" costs the squared true effect, averaged over valid cells
    same = target[:1].expand(2, 1, 3)
    loss, _ = paired_delta_loss(norm, batch, same, pairs)
    effect = (target[0] - target[1])[0, :2]  # cell 2 is inactive in row 1: excluded
    assert float(loss) == pytest.approx(float((effect**2).mean()), rel=1e-6)
