"""Does a smoother forecast lose on JSD? Copying yesterday vs the mean of the other days.

    python scripts/jsd_smoothing_check.py data/test12 [data/val12 ...]

For each Para scenario of each dataset (one-week maps), days 1-6 of every map are predicted two
ways without any model: by the same slot yesterday, and by the mean of the same slot on the
week's other six days (an oracle that sees the future, but a smooth one). Prints the pooled JSD
(``worldmodel.metrics.jsd``, as the evaluation computes it) and MAE (MB) over active cells.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from worldmodel.metrics import jsd
from worldmodel.twin.scenario import DAYS_PER_WEEK, SLOTS_PER_DAY

SCENARIOS = ("urban-para", "suburb-para", "hex-para")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+", type=Path, help="dataset folders with one-week test maps")
    args = ap.parse_args(argv)
    print("| data | scenario | yesterday JSD | yesterday MAE | other days JSD | other days MAE |")
    print("|---|---|---:|---:|---:|---:|")
    for data in args.data:
        for sc in SCENARIOS:
            maps = sorted(data.glob(f"{sc}-test-*.npz"))
            if not maps:
                continue
            cols: list[list[np.ndarray]] = [[], [], [], []]
            for f in maps:
                with np.load(f) as z:
                    x = z["traffic"].astype(np.float64)
                    on = z["active"]
                if x.shape[0] != DAYS_PER_WEEK * SLOTS_PER_DAY:
                    raise SystemExit(f"{f}: expected one week of slots, got {x.shape[0]}")
                d = x.reshape(DAYS_PER_WEEK, SLOTS_PER_DAY, -1)
                others = (d.sum(axis=0, keepdims=True) - d) / (DAYS_PER_WEEK - 1)
                for i, arr in enumerate((d[:-1], others[1:], d[1:], on.reshape(d.shape)[1:])):
                    cols[i].append(arr.ravel())
            yest, other, true, mask = (np.concatenate(c) for c in cols)
            mae = [float(np.abs(p - true)[mask].mean()) for p in (yest, other)]
            print(
                f"| {data} | {sc} | {jsd(yest, true, mask):.5f} | {mae[0]:.1f} | "
                f"{jsd(other, true, mask):.5f} | {mae[1]:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
