"""Calibrated uncertainty for the world models: fitting the quantile head, its scores, the gate.

* ``worldmodel.model.uncertainty``: the head itself (``QuantileHead``), ``Forecast`` (what
  ``MobiWM.rollout(uncertainty=True)`` returns), ``ActionSupport`` (the gate's score) and their
  files beside a checkpoint.
* ``fit``: rollout examples, the pinball-loss fit, the temperature, the copula, the support.
* ``gate``: support distances of the counterfactual section's plans.
* ``metrics``: scores of quantile forecasts (pinball, CRPS, PIT, coverage, AUROC, ...).
* ``train``: ``python -m worldmodel.uncertainty.train`` (see ``docs/uncertainty.md``).
"""

from worldmodel.model.uncertainty import (
    QUANTILE_LEVELS,
    ActionSupport,
    Forecast,
    QuantileHead,
    UncertaintyConfig,
    load_uncertainty,
    save_uncertainty,
)

__all__ = [
    "QUANTILE_LEVELS",
    "ActionSupport",
    "Forecast",
    "QuantileHead",
    "UncertaintyConfig",
    "load_uncertainty",
    "save_uncertainty",
]
