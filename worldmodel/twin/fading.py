"""Background drawing of the next step's fast fading, used only when it is the very same draw.

``NetworkTwin.step`` draws ``[3, copies, P]`` standard normals per slot from its generator
(4.3 million per slot at 64 copies on hex57: about a third of a 64-copy step). After a step,
``FadingPrefetch.start`` draws the next step's normals in a worker thread from a *copy* of the
generator (numpy releases the GIL while filling), overlapping with the caller's work (the
next ``set_params``). ``take`` hands them over only when the generator is the same object in
the same state and the shape and scale match, and then moves the generator to the state the
copy reached: the twin's output and generator state are exactly those of drawing directly.
Otherwise the draw is dropped (not waited for) and the twin draws as usual.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np


class FadingPrefetch:
    """One pending draw of ``standard_normal(shape, float32) * scale`` ahead of its use."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()  # a forked child has no worker thread: it starts afresh
        self._buf: np.ndarray | None = None  # reused: a taken draw is dead by the next start
        self._job: tuple[np.random.Generator, dict, tuple, np.float32, Future] | None = None

    def start(self, rng: np.random.Generator, shape: tuple[int, ...], scale: np.float32) -> None:
        """Begin drawing what ``rng.standard_normal(shape, np.float32) * scale`` would give."""
        if self._pid != os.getpid():
            self.__init__()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-fading")
        clone = copy.deepcopy(rng)
        if self._buf is None or self._buf.shape != shape:
            self._buf = np.empty(shape, dtype=np.float32)
        buf = self._buf

        def draw() -> tuple[np.ndarray, dict]:
            clone.standard_normal(dtype=np.float32, out=buf)
            np.multiply(buf, scale, out=buf)
            return buf, clone.bit_generator.state

        self._job = (rng, rng.bit_generator.state, shape, scale, self._pool.submit(draw))

    def take(
        self, rng: np.random.Generator, shape: tuple[int, ...], scale: np.float32
    ) -> np.ndarray | None:
        """The pending draw if it is exactly ``rng``'s next one (``rng`` then advanced past
        it), else ``None``. The pending draw is consumed either way; the array returned is
        valid until the next ``start``."""
        job, self._job = self._job, None
        if job is None or self._pid != os.getpid():
            return None
        src, state, want_shape, want_scale, future = job
        if src is not rng or want_shape != shape or want_scale != scale:
            return None
        if rng.bit_generator.state != state:
            return None
        try:
            out, end = future.result()
        except Exception:  # a failed background draw: draw in the caller instead
            return None
        rng.bit_generator.state = end
        return out

    # copies and pickles of a twin start without a pending draw or a thread
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()
