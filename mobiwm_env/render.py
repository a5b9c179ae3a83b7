"""Pygame rendering of a load-balancing env: a cell-load heatmap of the map.

Every pixel of the map shows the load ratio (traffic / capacity, latest slot) of the cell
serving it, through a colormap held as a numpy look-up table (unserved pixels are grey).
Sites are black dots; every active cell has a white line along its azimuth. A header shows
the scenario, backend, time of week, episode step and last reward; a colour bar on the right
explains the colours. Frames have a fixed size (``FRAME_W × FRAME_H``) whatever the map.

Speed: the static layer (background, colour bar, labels) is drawn once; a frame is one LUT
gather on the ``[G, G]`` serving map, a ``surfarray`` blit, one ``smoothscale`` to
``MAP_PX``, a few dozen lines and two text renders. Works headless (``SDL_VIDEODRIVER=dummy``);
without a usable font, text is left out.
"""

from __future__ import annotations

import os

import numpy as np

from worldmodel.twin.scenario import AZIMUTH, SLOTS_PER_DAY, Scenario

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

MAP_PX = 512
HEADER_PX = 40
LEGEND_PX = 96
FRAME_W = MAP_PX + LEGEND_PX
FRAME_H = MAP_PX + HEADER_PX
MAX_LOAD_RATIO = 1.5
"""Load ratio at the top of the colour scale (higher values saturate)."""
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ANCHORS = (  # (load ratio / MAX_LOAD_RATIO, RGB)
    (0.00, (28, 30, 80)),
    (0.20, (35, 95, 190)),
    (0.40, (30, 175, 160)),
    (0.60, (130, 210, 70)),
    (0.70, (245, 215, 40)),
    (0.85, (240, 120, 30)),
    (1.00, (175, 20, 30)),
)
UNSERVED_RGB = (70, 70, 70)


def load_colormap(n: int = 256) -> np.ndarray:
    """``[n + 1, 3]`` uint8 LUT: rows ``0..n-1`` span load ratio 0..MAX, row ``n`` = unserved."""
    pos = np.array([a[0] for a in _ANCHORS])
    rgb = np.array([a[1] for a in _ANCHORS], dtype=np.float64)
    x = np.linspace(0.0, 1.0, n)
    lut = np.stack([np.interp(x, pos, rgb[:, c]) for c in range(3)], axis=1)
    return np.vstack([lut, UNSERVED_RGB]).round().astype(np.uint8)


def time_label(slot: int, slot_minutes: int = 15) -> str:
    """``"Tue 14:15"`` for an absolute slot (0 = Monday 00:00)."""
    day = DAY_NAMES[(int(slot) // SLOTS_PER_DAY) % 7]
    minutes = (int(slot) % SLOTS_PER_DAY) * slot_minutes
    return f"{day} {minutes // 60:02d}:{minutes % 60:02d}"


class MapRenderer:
    """Draws frames of one scenario; ``frame`` → ``[FRAME_H, FRAME_W, 3]`` uint8, ``show`` for
    ``"human"`` mode (a pygame window, reopened on demand after ``close``). The serving map may
    have any raster size (it is scaled to ``MAP_PX``)."""

    def __init__(self, scenario: Scenario, fps: int = 4, title: str = "MobiWM Gym") -> None:
        import pygame

        self._pg = pygame
        self.scenario = scenario
        self.fps = int(fps)
        self.title = title
        self.lut = load_colormap()
        self.n_colors = self.lut.shape[0] - 1
        self._small = None  # sized to the serving map on first use
        self._scaled = pygame.Surface((MAP_PX, MAP_PX))
        self._frame = pygame.Surface((FRAME_W, FRAME_H))
        self.window = None
        self.clock = None
        self.font = self.small_font = None
        try:
            pygame.font.init()
            self.font = pygame.font.Font(None, 22)
            self.small_font = pygame.font.Font(None, 18)
        except Exception:  # pragma: no cover - pygame built without fonts
            self.font = self.small_font = None
        ext = scenario.extent_m
        xy = scenario.site_xy_m
        self.site_px = np.stack(
            [xy[:, 0] / ext * MAP_PX, HEADER_PX + (1.0 - xy[:, 1] / ext) * MAP_PX], axis=1
        )
        self.cell_site = scenario.cell_site
        if len(xy) > 1:
            d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
            np.fill_diagonal(d, np.inf)
            spacing = float(np.median(d.min(axis=1))) / ext * MAP_PX
        else:
            spacing = MAP_PX / 4
        self.arrow_px = float(np.clip(0.38 * spacing, 6.0, 60.0))
        self._static = self._draw_static()

    # ------------------------------------------------------------------ static layer
    def _text(self, surf, text: str, pos: tuple[float, float], small: bool = False, color=None):
        font = self.small_font if small else self.font
        if font is None:
            return
        img = font.render(text, True, color or (235, 235, 235))
        surf.blit(img, pos)

    def _draw_static(self):
        pg = self._pg
        surf = pg.Surface((FRAME_W, FRAME_H))
        surf.fill((18, 18, 24))
        x0, y0, w, h = MAP_PX + 22, HEADER_PX + 40, 22, MAP_PX - 90
        ramp = self.lut[: self.n_colors][::-1]  # top = high load
        rows = np.interp(np.arange(h), [0, h - 1], [0, self.n_colors - 1]).round().astype(int)
        bar = np.broadcast_to(ramp[rows][None, :, :], (w, h, 3))
        surf.blit(pg.surfarray.make_surface(np.ascontiguousarray(bar)), (x0, y0))
        pg.draw.rect(surf, (200, 200, 200), (x0, y0, w, h), 1)
        for v in (0.0, 0.5, 1.0, 1.5):
            y = y0 + (1.0 - v / MAX_LOAD_RATIO) * (h - 1)
            pg.draw.line(surf, (200, 200, 200), (x0 + w, y), (x0 + w + 5, y))
            self._text(surf, f"{v:.1f}", (x0 + w + 8, y - 6), small=True)
        self._text(surf, "load", (MAP_PX + 14, HEADER_PX + 6), small=True)
        self._text(surf, "ratio", (MAP_PX + 14, HEADER_PX + 20), small=True)
        gy = y0 + h + 14
        pg.draw.rect(surf, UNSERVED_RGB, (x0, gy, w, 12))
        self._text(surf, "none", (x0 + w + 6, gy - 1), small=True)
        return surf

    # ------------------------------------------------------------------ frames
    def draw(
        self,
        serving: np.ndarray,
        load_ratio: np.ndarray,
        params: np.ndarray,
        active: np.ndarray,
        slot: int,
        reward: float | None = None,
        step: int | None = None,
        episode_steps: int | None = None,
        label: str = "",
    ):
        """Draw one frame onto the internal surface and return it (a ``pygame.Surface``).

        ``serving [G, G]`` cell per pixel (-1 unserved, row 0 = south), ``load_ratio [N]``,
        ``params [N, 4]`` physical, ``active [N]``.
        """
        pg = self._pg
        lr = np.nan_to_num(np.asarray(load_ratio, dtype=np.float64), nan=0.0)
        idx = np.clip(lr * ((self.n_colors - 1) / MAX_LOAD_RATIO), 0, self.n_colors - 1)
        cell_color = np.append(idx.astype(np.intp), self.n_colors)  # last = unserved (id -1)
        # screen x = raster column, screen y = flipped raster row
        img = self.lut[cell_color[np.asarray(serving)[::-1].T]]
        if self._small is None or self._small.get_size() != img.shape[:2]:
            self._small = pg.Surface(img.shape[:2])
        pg.surfarray.blit_array(self._small, img)
        pg.transform.smoothscale(self._small, (MAP_PX, MAP_PX), self._scaled)
        frame = self._frame
        frame.blit(self._static, (0, 0))
        frame.blit(self._scaled, (0, HEADER_PX))
        for site in np.unique(self.cell_site):
            pg.draw.circle(frame, (10, 10, 10), self.site_px[site], 3)
        az = np.deg2rad(np.asarray(params)[:, AZIMUTH])
        start = self.site_px[self.cell_site]
        end = start + self.arrow_px * np.stack([np.sin(az), -np.cos(az)], axis=1)
        for i in np.flatnonzero(np.asarray(active, dtype=bool)):
            pg.draw.line(frame, (250, 250, 250), start[i], end[i], 2)
        text = f"{label}  {time_label(slot, self.scenario.slot_minutes)}"
        if step is not None:
            text += f"  step {step}" + (f"/{episode_steps}" if episode_steps else "")
        self._text(frame, text, (8, 4))
        sub = f"mean load {lr[np.asarray(active, dtype=bool)].mean():.2f}" if np.any(active) else ""
        if reward is not None and np.isfinite(reward):
            sub += f"   reward {reward:.2f}"
        self._text(frame, sub, (8, 22), small=True)
        return frame

    def to_array(self, surface) -> np.ndarray:
        """``[FRAME_H, FRAME_W, 3]`` uint8 copy of a frame surface."""
        return np.ascontiguousarray(self._pg.surfarray.pixels3d(surface).transpose(1, 0, 2))

    def show(self, surface) -> None:
        """Show a frame in the window (opened on first use / after ``close``), at ``fps``."""
        pg = self._pg
        if self.window is None:
            pg.display.init()
            self.window = pg.display.set_mode((FRAME_W, FRAME_H))
            pg.display.set_caption(self.title)
            self.clock = pg.time.Clock()
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.close()
                return
        self.window.blit(surface, (0, 0))
        pg.display.flip()
        self.clock.tick(self.fps)

    def close(self) -> None:
        """Close the window (if open); a later ``show`` opens a new one."""
        if self.window is not None:
            self._pg.display.quit()
            self.window = None
            self.clock = None
