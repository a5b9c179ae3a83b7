"""ModelConfig validation and presets."""

from __future__ import annotations

import pytest

from worldmodel.model import PRESETS, MobiWM, ModelConfig, preset


def test_presets_build_and_sizes_increase() -> None:
    counts = {name: MobiWM(preset(name)).n_parameters() for name in ("S", "M", "L", "XL")}
    print("parameters per preset:", {k: f"{v / 1e6:.2f} M" for k, v in counts.items()})
    values = list(counts.values())
    assert values == sorted(values) and len(set(values)) == 4
    assert MobiWM(preset("debug")).n_parameters() < counts["S"]


def test_preset_overrides_and_unknown_names() -> None:
    cfg = preset("M", use_actions=False, history=6)
    assert cfg.d_model == PRESETS["M"]["d_model"] and not cfg.use_actions and cfg.history == 6
    assert cfg.window == 6 + cfg.horizon
    with pytest.raises(ValueError, match="unknown preset"):
        preset("XXL")
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        preset("S", d_modle=3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, "divisible"),
        ({"d_model": 0}, "d_model must be >= 1"),
        ({"dropout": 1.0}, "dropout"),
        ({"horizon": 0}, "horizon must be >= 1"),
        ({"loss": "l1"}, "loss must be"),
        ({"history": 2.5}, "history must be int"),
        ({"use_trn": 1}, "use_trn must be bool"),
        ({"d_model": True}, "d_model must be int"),
        ({"distance_scale_m": -1.0}, "distance_scale_m"),
        ({"max_frequency": 0.1}, "max_frequency"),
    ],
)
def test_config_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**overrides)


def test_config_dict_round_trip() -> None:
    cfg = preset("S")
    assert ModelConfig(**cfg.to_dict()) == cfg
    assert set(ModelConfig.field_types()) == set(cfg.to_dict())
