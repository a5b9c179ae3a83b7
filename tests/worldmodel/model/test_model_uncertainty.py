"""The quantile head, forecasts, the action support and their files (``model.uncertainty``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.worldmodel.model.conftest import make_batch
from worldmodel.baselines import MobiWMAdapter
from worldmodel.model import MobiWM, preset, save_checkpoint
from worldmodel.model.checkpoint import load_checkpoint
from worldmodel.model.uncertainty import (
    QUANTILE_LEVELS,
    ActionSupport,
    Forecast,
    QuantileHead,
    UncertaintyConfig,
    has_uncertainty,
    load_uncertainty,
    sample_quantiles,
    save_uncertainty,
)


def _head(d: int = 8, seed: int = 0, **cfg) -> QuantileHead:
    torch.manual_seed(seed)
    head = QuantileHead(d, UncertaintyConfig(**cfg))
    with torch.no_grad():  # a head whose spread depends on its inputs
        for p in head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return head.eval()


def test_head_quantiles_never_cross_and_centre_on_the_point() -> None:
    head = _head()
    feat, z = torch.randn(3, 4, 5, 8), torch.randn(3, 4, 5)
    q = head(feat, z, torch.arange(12.0).reshape(3, 4))
    assert q.shape == (3, 4, 5, len(QUANTILE_LEVELS))
    assert bool((q.diff(dim=-1) > 0).all())
    fresh = QuantileHead(8)  # at initialisation the median is the point prediction
    q0 = fresh(feat, z, torch.zeros(3, 4))
    assert torch.allclose(q0[..., fresh.cfg.median_index], z)


def test_temperature_scales_every_distance_from_the_median() -> None:
    head = _head()
    feat, z, lead = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3), torch.ones(2, 4)
    q1 = head(feat, z, lead)
    q2 = head.configure(temperature=2.0)(feat, z, lead)
    m = head.cfg.median_index
    assert torch.allclose(q2 - q2[..., m : m + 1], 2.0 * (q1 - q1[..., m : m + 1]), atol=1e-5)


def test_head_reads_the_lead_time() -> None:
    head = _head()
    feat, z = torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3)
    a = head(feat, z, torch.ones(1, 4))
    b = head(feat, z, torch.full((1, 4), 90.0))
    assert not torch.allclose(a, b)
    cap = head(feat, z, torch.full((1, 4), 96.0))
    assert torch.equal(cap, head(feat, z, torch.full((1, 4), 500.0)))  # capped at max lead


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"levels": (0.1, 0.9, 0.95)}, "median"),
        ({"levels": (0.5, 0.1, 0.9)}, "increasing"),
        ({"levels": (0.0, 0.5, 0.9)}, "in \\(0, 1\\)"),
        ({"temperature": 0.0}, "temperature"),
        ({"copula_rho": 1.0}, "copula_rho"),
        ({"hidden": 0}, "hidden"),
    ],
)
def test_config_errors_name_the_field(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        UncertaintyConfig(**kw)


def test_sample_quantiles_is_the_inverse_cdf() -> None:
    lv = torch.tensor([0.1, 0.5, 0.9])
    q = torch.tensor([[1.0, 2.0, 4.0]])
    at = sample_quantiles(q.expand(3, 3), lv, torch.tensor([0.1, 0.5, 0.9]))
    assert torch.allclose(at, torch.tensor([1.0, 2.0, 4.0]))
    mid = sample_quantiles(q, lv, torch.tensor([0.7]))
    assert torch.allclose(mid, torch.tensor([3.0]))
    tails = sample_quantiles(q.expand(2, 3), lv, torch.tensor([0.01, 0.99]))
    assert torch.allclose(tails, torch.tensor([1.0, 4.0]))


def _normal_forecast(mu: float, sigma: float, shape=(2, 50, 3), rho: float = 0.0) -> Forecast:
    lv = torch.tensor(QUANTILE_LEVELS, dtype=torch.float64)
    q = mu + sigma * torch.special.ndtri(lv)
    quant = q.expand(*shape, len(lv)).clone()
    return Forecast(torch.full(shape, mu, dtype=torch.float64), quant, QUANTILE_LEVELS, rho)


def test_forecast_interval_std_and_samples() -> None:
    fc = _normal_forecast(100.0, 10.0)
    lo, hi = fc.interval(0.9)
    assert torch.allclose(hi - lo, torch.full_like(lo, 2 * 1.6449 * 10.0), rtol=1e-3)
    assert torch.allclose(fc.std(), torch.full_like(lo, 10.0), rtol=0.1)
    with pytest.raises(ValueError, match="level 0.335"):
        fc.interval(0.33)
    s1 = fc.sample(400, torch.Generator().manual_seed(3))
    s2 = fc.sample(400, torch.Generator().manual_seed(3))
    assert s1.shape == (400, 2, 50, 3) and torch.equal(s1, s2)
    assert abs(float(s1.mean()) - 100.0) < 0.5
    assert abs(float(s1.std()) - 10.0) < 1.0


def test_forecast_samples_follow_the_copula_correlation() -> None:
    for rho in (0.0, 0.6):
        fc = _normal_forecast(0.0, 1.0, shape=(1, 200, 4), rho=rho)
        x = fc.sample(200, torch.Generator().manual_seed(0)).numpy()
        a, b = x[:, :, 1:].ravel(), x[:, :, :-1].ravel()
        assert abs(np.corrcoef(a, b)[0, 1] - rho) < 0.05


def test_support_score() -> None:
    s = ActionSupport(low=(30, 0, 0, 0), high=(46, 360, 15, 12), change=(10, 160, 10, 8))
    ref = torch.tensor([[[40.0, 350.0, 5.0, 5.0], [40.0, 0.0, 5.0, 5.0]]], dtype=torch.float64)
    inside = ref.clone()[:, None]
    inside[..., 0, 1] = 10.0  # 350° → 10°: a 20° change across north, not 340°
    assert float(s.score(inside, ref)[0]) == 0.0
    over = ref.clone()[:, None]
    over[..., 1, 0] = 49.0  # 3 dB above the training maximum, a 9 dB change
    assert float(s.score(over, ref)[0]) == pytest.approx(0.3)
    jump = ref.clone()[:, None]
    jump[..., 0, 2] = 0.0
    jump[..., 1, 2] = 15.0  # a 10° tilt change: at the edge of the support
    assert float(s.score(jump, ref)[0]) == 0.0
    on = torch.tensor([[[True, False]]])
    assert float(s.score(over, ref, on)[0]) == 0.0  # only active cells count
    with pytest.raises(ValueError, match="change"):
        ActionSupport(low=(0,) * 4, high=(1,) * 4, change=(1, 1, 0, 1))


@pytest.fixture()
def model_with_head() -> MobiWM:
    torch.manual_seed(0)
    m = MobiWM(preset("debug")).eval()
    m.normalizer.set_stats(20.0, 0.7, 0.8)
    m.attach_uncertainty(_head(m.cfg.d_model))
    return m


def test_rollout_with_uncertainty_keeps_the_point_prediction(model_with_head: MobiWM) -> None:
    m = model_with_head
    h, p = m.cfg.history, m.cfg.horizon
    batch = make_batch((5, 7), history=h, horizon=3 * p)
    wm = MobiWMAdapter(m)
    point = wm.rollout_batch(batch, 3)
    fc = wm.rollout_batch(batch, 3, uncertainty=True)
    assert isinstance(fc, Forecast)
    assert torch.equal(fc.point, point)
    assert fc.quantiles.shape == (*point.shape, len(QUANTILE_LEVELS))
    off = ~(batch["active"][:, h:] & batch["cell_mask"][:, None])
    assert bool((fc.quantiles[off] == 0).all())
    assert bool((fc.quantiles.diff(dim=-1) >= 0).all())
    later = wm.model.rollout(
        batch["traffic"][:, :h], batch["actions"][:, :h], batch["actions"][:, h:],
        {k: batch[k] for k in ("poi", "od", "facility", "cell_xy", "extent_m", "cell_mask")},
        {"cell_mask": batch["cell_mask"], "active": batch["active"]},
        {"slot_of_day": batch["slot_of_day"], "day_of_week": batch["day_of_week"]},
        uncertainty=True, lead_offset=torch.tensor([40, 0]),
    )  # fmt: skip
    assert torch.equal(later.quantiles[1], wm.model.rollout(
        batch["traffic"][:, :h], batch["actions"][:, :h], batch["actions"][:, h:],
        {k: batch[k] for k in ("poi", "od", "facility", "cell_xy", "extent_m", "cell_mask")},
        {"cell_mask": batch["cell_mask"], "active": batch["active"]},
        {"slot_of_day": batch["slot_of_day"], "day_of_week": batch["day_of_week"]},
        uncertainty=True,
    ).quantiles[1])  # fmt: skip
    assert not torch.equal(later.quantiles[0], fc.quantiles[0])
    with pytest.raises(ValueError, match="lead_offset"):
        m.rollout(
            batch["traffic"][:, :h], batch["actions"][:, :h], batch["actions"][:, h:],
            {k: batch[k] for k in ("poi", "od", "facility", "cell_xy", "extent_m", "cell_mask")},
            {"cell_mask": batch["cell_mask"], "active": batch["active"]},
            {"slot_of_day": batch["slot_of_day"], "day_of_week": batch["day_of_week"]},
            uncertainty=True, lead_offset=-1,
        )  # fmt: skip


def test_rollout_asks_for_a_head() -> None:
    m = MobiWM(preset("debug")).eval()
    batch = make_batch((4,), history=m.cfg.history, horizon=m.cfg.horizon)
    with pytest.raises(ValueError, match="quantile head"):
        MobiWMAdapter(m).rollout_batch(batch, 1, uncertainty=True)
    with pytest.raises(ValueError, match="d_model"):
        m.attach_uncertainty(QuantileHead(m.cfg.d_model + 1))


def test_head_files_round_trip(tmp_path: Path, model_with_head: MobiWM) -> None:
    m = model_with_head
    ckpt = save_checkpoint(m, tmp_path / "ckpt")
    assert not has_uncertainty(ckpt)  # the network's files never hold the head
    assert load_checkpoint(ckpt).uncertainty_head is None
    head = m.uncertainty_head
    head.support = ActionSupport((30, 0, 0, 0), (46, 360, 15, 12), (10, 160, 10, 8), 0.01)
    head.configure(temperature=1.2, copula_rho=0.3)
    save_uncertainty(head, ckpt, extra={"note": "test"})
    assert has_uncertainty(ckpt)
    loaded = load_checkpoint(ckpt)
    h2 = loaded.uncertainty_head
    assert h2 is not None and h2.cfg == head.cfg and h2.support == head.support
    batch = make_batch((5,), history=m.cfg.history, horizon=m.cfg.horizon)
    a = MobiWMAdapter(m).rollout_batch(batch, 1, uncertainty=True)
    b = MobiWMAdapter(loaded).rollout_batch(batch, 1, uncertainty=True)
    assert torch.allclose(a.quantiles, b.quantiles)
    meta = json.loads((ckpt / "uncertainty.json").read_text())
    assert meta["extra"] == {"note": "test"} and meta["support"]["threshold"] == 0.01
    with pytest.raises(ValueError, match="d_model"):
        load_uncertainty(ckpt, m.cfg.d_model * 2)
    meta["config"]["temperature"] = -1
    (ckpt / "uncertainty.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="temperature"):
        load_checkpoint(ckpt)
    (ckpt / "uncertainty.json").write_text("{not json")
    with pytest.raises(ValueError, match="uncertainty.json"):
        load_checkpoint(ckpt)


def test_unfitted_support_threshold_is_infinite() -> None:
    s = ActionSupport((0,) * 4, (1,) * 4, (1,) * 4)
    assert math.isinf(s.threshold)
    assert ActionSupport.from_dict(s.to_dict()) == s
