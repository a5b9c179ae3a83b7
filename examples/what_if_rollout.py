"""What if one site tilts its antennas down? MobiWM's prediction vs the twin, over one day.

    python examples/what_if_rollout.py                         # shipped checkpoint, site 0, +4°
    python examples/what_if_rollout.py --site 7 --tilt-change -3 --checkpoint runs/wm/best

Two episodes start from the same state (same seed, start slot Tuesday 00:00, base parameters):
one keeps every parameter, the other changes the electrical tilt of all cells of ``--site`` by
``--tilt-change`` degrees in its first step (the per-step limit is raised for that) and then
holds still. Both run on the world model and on the twin; the plot shows the traffic (MB per
15-min slot) of the site's cells: twin (solid) vs world model (dashed), changed vs unchanged.
Saves ``what_if_site<k>.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from agents.envs import find_core, make_vector_env  # noqa: E402
from worldmodel.twin.scenario import ELEC_TILT, SLOTS_PER_DAY  # noqa: E402


def day_of_traffic(backend: str, checkpoint: str | None, site: int, change_deg: float):
    """Traffic ``[2, 96, N]`` (unchanged, changed) and the site's cells on ``backend``."""
    venv = make_vector_env(
        backend,
        2,
        checkpoint,
        episode_steps=24,
        randomize_params=False,
        max_step={"elec_tilt_deg": max(abs(change_deg), 1.0)},
    )
    core = find_core(venv)
    cells = np.flatnonzero(core.scenario.cell_site == site)
    start = 7 * SLOTS_PER_DAY + SLOTS_PER_DAY  # Tuesday 00:00 of week 1
    venv.reset(seed=0, options={"start_slot": start})
    action = np.zeros((2, core.max_cells, 4), dtype=np.float32)
    action[1, cells, ELEC_TILT] = change_deg / max(abs(change_deg), 1.0)
    traffic = []
    for _ in range(24):
        _, _, _, _, info = venv.step(action.reshape(2, -1))
        traffic.append(info["traffic"])
        action[:] = 0.0
    tilt = venv.params[1, cells, ELEC_TILT]
    venv.close()
    return np.concatenate(traffic, axis=1), cells, tilt


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--site", type=int, default=0, help="site whose cells change (default 0)")
    p.add_argument("--tilt-change", type=float, default=4.0, help="elec. tilt change, degrees")
    p.add_argument("--checkpoint", default="", help="world-model checkpoint ('' = shipped)")
    p.add_argument("--out", default=".", help="folder of the PNG")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    ckpt = args.checkpoint or None
    twin, cells, tilt = day_of_traffic("twin", None, args.site, args.tilt_change)
    wm, _, _ = day_of_traffic("world_model", ckpt, args.site, args.tilt_change)
    hours = np.arange(twin.shape[1]) / 4.0
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 3.6), sharey=True)
    for ax, c, t in zip(np.atleast_1d(axes), cells, tilt, strict=True):
        ax.plot(hours, twin[0, :, c], color="0.6", label="twin, unchanged")
        ax.plot(hours, twin[1, :, c], color="C0", label="twin, changed")
        ax.plot(hours, wm[0, :, c], color="0.6", ls="--", label="world model, unchanged")
        ax.plot(hours, wm[1, :, c], color="C1", ls="--", label="world model, changed")
        ax.set_title(f"cell {c} (elec. tilt now {t:.1f}°)")
        ax.set_xlabel("hour of Tuesday")
    np.atleast_1d(axes)[0].set_ylabel("traffic (MB per 15-min slot)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    title = f"What if site {args.site} changes its electrical tilt by {args.tilt_change:+g}°?"
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(args.out) / f"what_if_site{args.site}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    for c in cells:
        dt = twin[1, :, c].mean() - twin[0, :, c].mean()
        dw = wm[1, :, c].mean() - wm[0, :, c].mean()
        print(f"cell {c}: mean change twin {dt:+8.1f} MB/slot, world model {dw:+8.1f} MB/slot")
    print(f"saved {out}")
    return out


if __name__ == "__main__":
    main()
