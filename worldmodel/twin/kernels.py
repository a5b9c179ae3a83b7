"""Numba kernels of ``NetworkTwin``'s hot path (link budgets, top-two search, A3 + traffic).

Results equal the numpy reference (``antenna.gain_from_trig``, ``association.top2`` and
``association.a3_step``) bit for bit: the kernels repeat its float32 arithmetic operation by
operation (IEEE ``+ − × ÷ √`` round the same in numba and numpy; no fused multiply-adds), and
the only transcendental terms whose float32 rounding differs between libraries (``sin`` and
``log10`` of the array factor) are left to numpy:

1. ``scan_links`` computes the candidate links of a pixel for ``R`` copies at once (the inner
   loop over copies vectorises), skipping candidates that cannot reach the top two. The
   element gain and the array-factor phase are exact; the array factor itself is
   approximated branch-free (``_approx_array_db``, error ``ScanConfig.err_db`` ≈ 2e-4 dB), so
   a scanned RSRP is within ``margin_db / 2`` of the exact one. Links within ``margin_db`` of
   the pixel's second strongest scanned link are kept ("survivors"): the exact top two are
   among them. Typically 2.0 survivors per pixel and copy, out of K = 24 candidates.
2. ``array_gain_db`` (numpy, in ``antenna``) gives the exact array factor of the survivors.
3. ``finish_top2`` adds it up exactly and picks the two strongest.

Per-cell inputs come as one float32 block ``cell [7, N, R]`` (rows ``CELL_ROWS``), copies
last so that the loop over copies reads contiguous memory. Angles of links are the static
cosines/sines of ``NetworkTwin``; powers in dBm, gains in dB.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba as nb
import numpy as np

from worldmodel.twin.antenna import AntennaConfig

CELL_ROWS = ("power", "cos_az", "sin_az", "cos_mt", "sin_mt", "cos_et", "on")
"""Rows of the per-cell block: dBm, trig of azimuth / mech. tilt, ``cos(90° + e-tilt)``, 1/0."""

_NEG_INF = np.float32(-np.inf)
_DEG = np.float32(np.degrees(np.float32(1.0)))  # numpy's float32 rad → deg factor
_HALF_PI = np.float32(0.5 * np.pi)
_PI = np.float32(np.pi)
_TWO_PI = np.float32(2.0 * np.pi)
_INV_TWO_PI = np.float32(0.5 / np.pi)
_LN2 = np.float32(np.log(2.0))
_LOG_STEPS = ((np.float32(256.0), np.float32(8.0)), (np.float32(16.0), np.float32(4.0)),
              (np.float32(4.0), np.float32(2.0)), (np.float32(2.0), np.float32(1.0)))  # fmt: skip


@dataclass(frozen=True)
class ScanConfig:
    """Antenna constants of the kernels and the survivor margin of ``scan_links``."""

    consts: np.ndarray  # float32 [9]: hpbw_v, hpbw_h, sla_v, a_max, element gain (dBi),
    #                     π·spacing, 1/n, array floor, 10·log10(floor) (dB)
    cheb: np.ndarray  # float32 [8]: U_{n-1}(t) = t^odd · Σ cheb[j]·t^(2j)
    odd: bool  # n - 1 odd
    err_db: float  # max error of ``_approx_array_db`` on 2^20 phases (dB)
    margin_db: float  # survivors lie within this of the second strongest scanned link (dB)
    gain_max_db: float  # bound on any link's scanned antenna gain (dBi)


def _array_gain_f64(half: np.ndarray, cfg: AntennaConfig) -> np.ndarray:
    n = cfg.n_vertical
    s = np.sin(half)
    small = np.abs(s) < 1e-12
    ratio = np.where(small, float(n), np.sin(n * half) / np.where(small, 1.0, s))
    return 10.0 * np.log10(ratio * ratio / n + n * 10.0 ** (cfg.null_fill_db / 10.0))


def _chebyshev_u(n: int) -> np.ndarray:
    """Coefficients (ascending powers of t) of ``U_n(t)``; ``U_0 = 1``, ``U_1 = 2t``."""
    prev, cur = np.array([1.0]), np.array([0.0, 2.0])
    if n == 0:
        return prev
    for _ in range(n - 1):
        prev, cur = (
            cur,
            np.concatenate([[0.0], 2.0 * cur]) - np.pad(prev, (0, len(cur) + 1 - len(prev))),
        )
    return cur


@functools.lru_cache(maxsize=8)
def scan_config(cfg: AntennaConfig) -> ScanConfig:
    """Kernel constants of ``cfg``; the margin is 3× the array-gain approximation error
    (measured on 2^20 phases over ``|half| ≤ 2π·spacing``, the reachable range) + 2e-3 dB, or
    infinite (every link survives) beyond 16 elements or a floor under -40 dB."""
    n = int(cfg.n_vertical)
    floor = np.float32(n * 10.0 ** (cfg.null_fill_db / 10.0))
    consts = np.array(
        [cfg.hpbw_v_deg, cfg.hpbw_h_deg, cfg.sla_v_db, cfg.a_max_db, cfg.element_gain_dbi,
         np.float32(np.pi * cfg.spacing_wavelengths), 1.0 / n, floor, 10.0 * np.log10(floor)],
        dtype=np.float32,
    )  # fmt: skip
    ok = 1 <= n <= 16 and -40.0 <= cfg.null_fill_db < 0.0
    u = _chebyshev_u(n - 1 if ok else 0)
    odd = (len(u) - 1) % 2 == 1
    cheb = np.zeros(8, dtype=np.float32)
    cheb[: (len(u) + 1) // 2] = u[int(odd) :: 2]
    h = 2.0 * np.pi * cfg.spacing_wavelengths
    half = np.linspace(-h, h, 2**20 + 1).astype(np.float32)
    approx = approx_array_db(half, cheb, odd, *consts[6:]).astype(np.float64)
    err = float(np.abs(approx - _array_gain_f64(half.astype(np.float64), cfg)).max())
    margin = 3.0 * err + 2e-3 if ok and np.isfinite(err) else np.inf
    gain_max = cfg.element_gain_dbi + 10.0 * np.log10(n + float(floor)) + err + 1e-3
    return ScanConfig(consts, cheb, odd, err, margin, float(gain_max))


# ---------------------------------------------------------------------------- scalar parts
@nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _fast_atan2(y, x):
    """``antenna.fast_atan2`` for float32 scalars (same operations)."""
    ax = abs(x)
    ay = abs(y)
    a = min(ax, ay) / max(max(ax, ay), np.float32(1e-30))
    s = a * a
    r = (np.float32(-0.0464964749) * s + np.float32(0.15931422)) * s - np.float32(0.327622764)
    r = r * s * a + a
    if ay > ax:
        r = _HALF_PI - r
    if x < 0:
        r = _PI - r
    if y < 0:
        r = -r
    return r


@nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _element_and_phase(
    cz, sz, cb, sb, cos_az, sin_az, cos_mt, sin_mt, cos_et, hv, hh, sla, amax, g0, pisp
):
    """(element gain + peak, dBi; array phase ``half``, rad) of one link, as ``gain_from_trig``."""
    cdp = cb * cos_az + sb * sin_az
    sdp = sb * cos_az - cb * sin_az
    ctl = cos_mt * cz + sin_mt * cdp * sz
    ctl = min(max(ctl, np.float32(-1.0)), np.float32(1.0))
    root = np.sqrt(max(np.float32(1.0) - ctl * ctl, np.float32(0.0)))
    theta = np.float32(90.0) - _fast_atan2(ctl, root) * _DEG
    phi = _fast_atan2(sz * sdp, cos_mt * sz * cdp - sin_mt * cz) * _DEG
    tv = (theta - np.float32(90.0)) / hv
    a_v = -min(np.float32(12.0) * (tv * tv), sla)
    th = phi / hh
    a_h = -min(np.float32(12.0) * (th * th), amax)
    gain = g0 + -min(-(a_v + a_h), amax)
    return gain, pisp * (ctl - cos_et)


@nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _horizontal_db(cz, sz, cb, sb, cos_az, sin_az, cos_mt, sin_mt, hh, amax):
    """Horizontal element attenuation ``a_h`` (dB, ≤ 0) of ``_element_and_phase``."""
    cdp = cb * cos_az + sb * sin_az
    sdp = sb * cos_az - cb * sin_az
    phi = _fast_atan2(sz * sdp, cos_mt * sz * cdp - sin_mt * cz) * _DEG
    th = phi / hh
    return -min(np.float32(12.0) * (th * th), amax)


@nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _approx_array_db(half, cheb, odd, inv_n, floor, log_floor):
    """Array gain (dB) of phase ``half`` to about 1e-4 dB, branch-free (vectorises).

    ``sin(n·h)/sin(h) = U_{n-1}(cos h)``, a polynomial in ``cos h`` (coefficients ``cheb`` of
    ``s = cos² h``, times ``cos h`` when ``odd``); ``cos`` by its Taylor series to ``x^16``
    after reduction to ``[-π, π]``; ``log(y / floor)`` (≥ 0) by the ``atanh`` series after
    halving it into ``[1, 2]`` by powers of two (``y / floor ≤ 2^16``).
    """
    x = half - _TWO_PI * np.floor(half * _INV_TWO_PI + np.float32(0.5))
    z = x * x
    c = np.float32(1.0 / 20922789888000.0)
    c = c * z - np.float32(1.0 / 87178291200.0)
    c = c * z + np.float32(1.0 / 479001600.0)
    c = c * z - np.float32(1.0 / 3628800.0)
    c = c * z + np.float32(1.0 / 40320.0)
    c = c * z - np.float32(1.0 / 720.0)
    c = c * z + np.float32(1.0 / 24.0)
    c = c * z - np.float32(0.5)
    t = c * z + np.float32(1.0)
    s = t * t
    u = cheb[7]
    for j in range(6, -1, -1):
        u = u * s + cheb[j]
    u = u * t if odd else u
    y = (u * u * inv_n + floor) / floor
    e = np.float32(0.0)
    for f, ef in _LOG_STEPS:
        if y >= f:
            y = y / f
            e += ef
    w = (y - np.float32(1.0)) / (y + np.float32(1.0))
    w2 = w * w
    p = np.float32(1.0 / 13.0)
    for d in (11.0, 9.0, 7.0, 5.0, 3.0, 1.0):
        p = p * w2 + np.float32(1.0 / d)
    ln10 = np.float32(2.0) * w * p + e * _LN2
    return np.float32(10.0 / np.log(10.0)) * ln10 + log_floor


# ---------------------------------------------------------------------------- kernels
@nb.njit(cache=True, nogil=True, error_model="numpy")
def approx_array_db(half, cheb, odd, inv_n, floor, log_floor):
    """``_approx_array_db`` over an array (float32 ``half``; for calibrating the margin)."""
    out = np.empty_like(half)
    for i in range(half.size):
        out[i] = _approx_array_db(half[i], cheb, odd, inv_n, floor, log_floor)
    return out


@nb.njit(cache=True, nogil=True, error_model="numpy")
def scan_links(
    pix, cand, static, cos_zen, sin_zen, cos_bear, sin_bear, cell, consts, cheb, odd, margin,
    gain_max, count, surv_k, surv_gain, surv_half,
):  # fmt: skip
    """Scan every candidate of pixels ``pix [Q]`` for the ``R`` copies of ``cell [7, N, R]``.

    A candidate is skipped for all copies at once when even ``gain_max`` (dBi), and then
    ``gain_max`` plus its horizontal attenuation (an upper bound of the element pattern),
    would leave it more than ``margin`` below every copy's running second strongest link
    (candidates come in decreasing static budget, so the bounds bite early).

    Writes, pixel-major then copy, the number of survivors per (pixel, copy) into
    ``count [Q·R]`` and, for each survivor in order, its candidate column, exact element gain
    (dBi) and array phase into ``surv_*``. Returns the number of survivors, or ``-1`` if the
    buffers are too small (nothing is then valid).
    """
    n_cand = cand.shape[1]
    n_copy = cell.shape[2]
    hv, hh, sla, amax, g0, pisp = consts[0], consts[1], consts[2], consts[3], consts[4], consts[5]
    inv_n, floor, log_floor = consts[6], consts[7], consts[8]
    cap = surv_k.size
    val = np.empty((n_cand, n_copy), dtype=np.float32)
    gain = np.empty((n_cand, n_copy), dtype=np.float32)
    half = np.empty((n_cand, n_copy), dtype=np.float32)
    top1 = np.empty(n_copy, dtype=np.float32)
    top2 = np.empty(n_copy, dtype=np.float32)
    scanned = np.empty(n_cand, dtype=np.int64)  # the candidates scanned, in order
    n_out = 0
    for q in range(pix.size):
        p = pix[q]
        top1[:] = _NEG_INF
        top2[:] = _NEG_INF
        n_scanned = 0
        for k in range(n_cand):
            link = p * n_cand + k
            c = cand[p, k]
            cz, sz = cos_zen[link], sin_zen[link]
            cb, sb, st = cos_bear[link], sin_bear[link], static[link]
            reach = st + gain_max + margin
            n_reach = 0
            for r in range(n_copy):
                n_reach += cell[0, c, r] + reach >= top2[r]
            if n_reach == 0:
                continue
            n_reach = 0  # bound the element gain by its horizontal part (a_v <= 0)
            for r in range(n_copy):
                a_h = _horizontal_db(
                    cz, sz, cb, sb, cell[1, c, r], cell[2, c, r], cell[3, c, r], cell[4, c, r],
                    hh, amax,
                )  # fmt: skip
                n_reach += cell[0, c, r] + a_h + reach >= top2[r]
            if n_reach == 0:
                continue
            scanned[n_scanned] = k
            n_scanned += 1
            for r in range(n_copy):
                g, h = _element_and_phase(
                    cz, sz, cb, sb, cell[1, c, r], cell[2, c, r], cell[3, c, r], cell[4, c, r],
                    cell[5, c, r], hv, hh, sla, amax, g0, pisp,
                )  # fmt: skip
                af = _approx_array_db(h, cheb, odd, inv_n, floor, log_floor)
                v = (cell[0, c, r] + (g + af)) + st
                val[k, r] = v if cell[6, c, r] > 0 else _NEG_INF
                gain[k, r] = g
                half[k, r] = h
            for r in range(n_copy):
                top2[r] = max(top2[r], min(top1[r], val[k, r]))
                top1[r] = max(top1[r], val[k, r])
        for r in range(n_copy):
            low = top2[r] - margin
            m = 0
            for j in range(n_scanned):
                k = scanned[j]
                v = val[k, r]
                if v >= low and v > _NEG_INF:
                    if n_out >= cap:
                        return -1
                    surv_k[n_out] = k
                    surv_gain[n_out] = gain[k, r]
                    surv_half[n_out] = half[k, r]
                    n_out += 1
                    m += 1
            count[q * n_copy + r] = m
    return n_out


@nb.njit(cache=True, nogil=True, error_model="numpy")
def scan_links_scalar(
    pix, cand, static, cos_zen, sin_zen, cos_bear, sin_bear, cell, consts, cheb, odd, margin,
    gain_max, count, surv_k, surv_gain, surv_half,
):  # fmt: skip
    """``scan_links`` one copy at a time (same output): for a few copies, where the loops
    over copies are too short to vectorise, bounds are checked per copy and link."""
    n_cand = cand.shape[1]
    n_copy = cell.shape[2]
    hv, hh, sla, amax, g0, pisp = consts[0], consts[1], consts[2], consts[3], consts[4], consts[5]
    inv_n, floor, log_floor = consts[6], consts[7], consts[8]
    cap = surv_k.size
    val = np.empty(n_cand, dtype=np.float32)
    gain = np.empty(n_cand, dtype=np.float32)
    half = np.empty(n_cand, dtype=np.float32)
    n_out = 0
    for q in range(pix.size):
        p = pix[q]
        for r in range(n_copy):
            top1 = _NEG_INF
            top2 = _NEG_INF
            for k in range(n_cand):
                link = p * n_cand + k
                c = cand[p, k]
                val[k] = _NEG_INF
                pw, st = cell[0, c, r], static[link]
                reach = pw + st + gain_max + margin
                if reach < top2 or cell[6, c, r] <= 0:
                    continue
                cz, sz, cb, sb = cos_zen[link], sin_zen[link], cos_bear[link], sin_bear[link]
                ca, sa, cm, sm = cell[1, c, r], cell[2, c, r], cell[3, c, r], cell[4, c, r]
                if reach + _horizontal_db(cz, sz, cb, sb, ca, sa, cm, sm, hh, amax) < top2:
                    continue
                g, h = _element_and_phase(
                    cz, sz, cb, sb, ca, sa, cm, sm, cell[5, c, r], hv, hh, sla, amax, g0, pisp
                )
                v = (pw + (g + _approx_array_db(h, cheb, odd, inv_n, floor, log_floor))) + st
                val[k] = v
                gain[k] = g
                half[k] = h
                top2 = max(top2, min(top1, v))
                top1 = max(top1, v)
            low = top2 - margin
            m = 0
            for k in range(n_cand):
                v = val[k]
                if v >= low and v > _NEG_INF:
                    if n_out >= cap:
                        return -1
                    surv_k[n_out] = k
                    surv_gain[n_out] = gain[k]
                    surv_half[n_out] = half[k]
                    n_out += 1
                    m += 1
            count[q * n_copy + r] = m
    return n_out


@nb.njit(cache=True, nogil=True, error_model="numpy")
def finish_top2(
    pix, envs, count, surv_k, surv_gain, array_db, cand, static, cell, top_cols, top_vals
):  # fmt: skip
    """Exact RSRP of the survivors of ``scan_links`` → ``top_cols/top_vals [E, P, 2]``.

    RSRP = (power + (element gain + ``array_db``)) + static, as the numpy reference. Missing
    columns (fewer than two cells on) are filled with other columns at ``-inf``.
    """
    n_cand = cand.shape[1]
    n_copy = envs.size
    cols = np.empty((n_copy, pix.size, 2), dtype=np.int32)  # copy-major: written out in order
    vals = np.empty((n_copy, pix.size, 2), dtype=np.float32)
    n = 0
    for q in range(pix.size):
        p = pix[q]
        for r in range(n_copy):
            b1 = _NEG_INF
            b2 = _NEG_INF
            k1 = -1
            k2 = -1
            for _ in range(count[q * n_copy + r]):
                k = surv_k[n]
                v = (cell[0, cand[p, k], r] + (surv_gain[n] + array_db[n])) + static[p * n_cand + k]
                n += 1
                if v > b1:
                    b2, k2 = b1, k1
                    b1, k1 = v, k
                elif v > b2:
                    b2, k2 = v, k
            if k1 < 0:
                k1 = 0
            if k2 < 0:
                k2 = 1 if (k1 == 0 and n_cand > 1) else 0
            cols[r, q, 0] = k1
            cols[r, q, 1] = k2
            vals[r, q, 0] = b1
            vals[r, q, 1] = b2
    for r in range(n_copy):
        e = envs[r]
        for q in range(pix.size):
            p = pix[q]
            top_cols[e, p, 0] = cols[r, q, 0]
            top_cols[e, p, 1] = cols[r, q, 1]
            top_vals[e, p, 0] = vals[r, q, 0]
            top_vals[e, p, 1] = vals[r, q, 1]


@nb.njit(cache=True, nogil=True, error_model="numpy")
def link_parts(env, pix, col, cand, cos_zen, sin_zen, cos_bear, sin_bear, cell, consts):
    """Element gain (dBi) and array phase of links ``(env, pix, col)`` ``[M]``; ``cell [7, N, E]``."""
    n_cand = cand.shape[1]
    hv, hh, sla, amax, g0, pisp = consts[0], consts[1], consts[2], consts[3], consts[4], consts[5]
    gain = np.empty(env.size, dtype=np.float32)
    half = np.empty(env.size, dtype=np.float32)
    for m in range(env.size):
        e, p, k = env[m], pix[m], col[m]
        link = p * n_cand + k
        c = cand[p, k]
        g, h = _element_and_phase(
            cos_zen[link], sin_zen[link], cos_bear[link], sin_bear[link], cell[1, c, e],
            cell[2, c, e], cell[3, c, e], cell[4, c, e], cell[5, c, e], hv, hh, sla, amax, g0,
            pisp,
        )  # fmt: skip
        gain[m] = g
        half[m] = h
    return gain, half


@nb.njit(cache=True, nogil=True, error_model="numpy")
def a3_traffic(
    serving, target, ttt, top_cols, top_vals, serving_rsrp, fading, cand, dens, dens_row,
    q_rxlevmin, hyst_db, offset_db, time_to_trigger, traffic, handovers, n_unserved,
):  # fmt: skip
    """One A3 slot in place (``association.a3_step``) and the cells' traffic of the result.

    ``serving/target/ttt [E, P]`` int32 association state; ``top_cols/top_vals [E, P, 2]``;
    ``serving_rsrp [E, P]`` mean RSRP of serving columns outside the top two (read only
    there); ``fading [3, F, P]`` dB (``F`` = 1: shared by all copies); ``dens [U, P]`` demand
    (MB) and ``dens_row [E]`` its row per copy. Accumulates ``traffic [E, N]`` (float64, in
    pixel order as ``np.bincount``); writes ``handovers [E]`` and ``n_unserved [E]`` (pixels).
    """
    n_env, n_pix = serving.shape
    shared = fading.shape[1] == 1
    for e in range(n_env):
        fe = 0 if shared else e
        d = dens_row[e]
        n_ho = 0
        n_un = 0
        for p in range(n_pix):
            c1 = top_cols[e, p, 0]
            c2 = top_cols[e, p, 1]
            v1 = top_vals[e, p, 0] + fading[0, fe, p]
            v2 = top_vals[e, p, 1] + fading[1, fe, p]
            col = serving[e, p]
            if col == c1:
                sv = v1
            elif col == c2:
                sv = v2
            else:
                sv = serving_rsrp[e, p] + fading[2, fe, p]
            served = col >= 0
            if not served:
                sv = _NEG_INF
            if v2 > v1:
                best, best_rsrp = c2, v2
            else:
                best, best_rsrp = c1, v1
            lost = (not served) or sv < q_rxlevmin
            a3 = (not lost) and best != col and best_rsrp > (sv + hyst_db) + offset_db
            cnt = (ttt[e, p] + 1) if (a3 and target[e, p] == best) else (1 if a3 else 0)
            handover = a3 and cnt >= time_to_trigger
            new = (best if best_rsrp >= q_rxlevmin else -1) if lost else (best if handover else col)
            pending = a3 and not handover
            serving[e, p] = new
            target[e, p] = best if pending else -1
            ttt[e, p] = cnt if pending else 0
            n_ho += handover
            if new >= 0:
                traffic[e, cand[p, new]] += np.float64(dens[d, p])
            else:
                n_un += 1
        handovers[e] = n_ho
        n_unserved[e] = n_un
