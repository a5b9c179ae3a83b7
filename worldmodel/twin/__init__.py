"""Physics digital twin of a mobile network (scenario, radio, demand, traffic).

- ``scenario``: ``Scenario`` (one map's static description), ``ParamBounds``, ``RadioConfig``,
  ``PARAM_NAMES`` (power_dbm, azimuth_deg, mech_tilt_deg, elec_tilt_deg), ``LandUse``.
- ``builders``: ``make_scenario`` (hex / urban / suburb), ``get_scenario`` and ``SCENARIOS``.
- ``antenna`` / ``propagation``: 3GPP TR 38.901 sector pattern and UMa/UMi path loss.
- ``demand`` / ``profiles``: demand density per pixel and slot (named presets: ``realistic``,
  ``smooth``), weekly shapes from real traces.
- ``realism``: the scorecard comparing generated maps' per-cell traffic with real traces.
- ``association``: strongest cell above Qrxlevmin with A3 hysteresis handover.
- ``network``: ``NetworkTwin``, batched over ``E`` copies: parameters in, per-cell traffic out.
- ``kernels`` / ``fading``: its numba hot path (bit-identical to the numpy reference) and the
  background draw of the next step's fast fading.
"""

from worldmodel.twin.builders import SCENARIOS, get_scenario, make_scenario
from worldmodel.twin.demand import DEMAND_PRESETS, DemandConfig, DemandModel
from worldmodel.twin.network import NetworkTwin, TwinStep
from worldmodel.twin.scenario import (
    PARAM_NAMES,
    SLOTS_PER_DAY,
    SLOTS_PER_WEEK,
    LandUse,
    ParamBounds,
    RadioConfig,
    Scenario,
)

__all__ = [
    "PARAM_NAMES",
    "SCENARIOS",
    "SLOTS_PER_DAY",
    "SLOTS_PER_WEEK",
    "DEMAND_PRESETS",
    "DemandConfig",
    "DemandModel",
    "LandUse",
    "NetworkTwin",
    "ParamBounds",
    "RadioConfig",
    "Scenario",
    "TwinStep",
    "get_scenario",
    "make_scenario",
]
