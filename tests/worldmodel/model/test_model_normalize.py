"""Traffic normaliser and fixed input normalisations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldmodel.model.normalize import TrafficNormalizer, normalize_actions, normalize_counts


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
