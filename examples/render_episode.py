"""Run one episode with a simple load-balancing heuristic and save it as a GIF.

    python examples/render_episode.py                          # twin dynamics -> episode.gif
    python examples/render_episode.py --checkpoint PATH        # world-model dynamics
    python examples/render_episode.py --steps 12 --out day.gif

The heuristic reads the observation blocks (``mobiwm_env.obs_layout``): a cell carrying more
than its target lowers its power and tilts down, one carrying less does the opposite. Frames
come from ``render_mode="rgb_array"``; they are written with Pillow (a dependency of
matplotlib), else imageio if installed, else as PNG files into a folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gymnasium as gym
import numpy as np

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import mobiwm_env  # noqa: E402
from mobiwm_env import unflatten_obs  # noqa: E402


def heuristic_action(obs: np.ndarray, max_cells: int, history_slots: int) -> np.ndarray:
    """Per-cell change in [-1, 1]: shed load where traffic exceeds the target, attract it
    where it falls short (power ∓, electrical tilt ±); azimuth and mechanical tilt unchanged."""
    blocks = unflatten_obs(obs, max_cells, history_slots)
    excess = blocks["traffic"][:, -1] - blocks["target"]  # log-scale traffic minus target
    push = np.clip(4.0 * excess, -1.0, 1.0) * blocks["mask"]
    action = np.zeros((max_cells, 4), dtype=np.float32)
    action[:, 0] = -push  # power_dbm
    action[:, 3] = push  # elec_tilt_deg: more downtilt shrinks the cell
    return action.ravel()


def save_frames(frames: list[np.ndarray], out: Path, fps: int) -> Path:
    """Write a GIF with Pillow or imageio; else PNG frames into ``out`` without suffix."""
    try:
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        )
        return out
    except ImportError:
        pass
    try:
        import imageio.v2 as imageio

        imageio.mimsave(out, frames, duration=1.0 / fps)
        return out
    except ImportError:
        pass
    import pygame

    folder = out.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        pygame.image.save(
            pygame.surfarray.make_surface(f.transpose(1, 0, 2)), folder / f"{i:03d}.png"
        )
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="use the world model with this checkpoint")
    p.add_argument("--scenario", default="hex57")
    p.add_argument("--steps", type=int, default=24, help="env steps (1 h each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("episode.gif"))
    args = p.parse_args(argv)

    if args.checkpoint:
        env_id, kwargs = mobiwm_env.WORLD_MODEL_ID, {"checkpoint": args.checkpoint}
    else:
        env_id, kwargs = mobiwm_env.TWIN_ID, {}
    env = gym.make(
        env_id,
        render_mode="rgb_array",
        scenario=args.scenario,
        episode_steps=args.steps,
        **kwargs,
    )
    core = env.unwrapped.core
    obs, info = env.reset(seed=args.seed)
    frames = [env.render()]
    total, truncated = 0.0, False
    while not truncated:
        action = heuristic_action(obs, core.max_cells, core.config.history_slots)
        obs, reward, _, truncated, info = env.step(action)
        total += reward
        frames.append(env.render())
    fps = env.metadata["render_fps"]
    env.close()
    where = save_frames(frames, args.out, fps)
    print(f"{env_id} on {args.scenario}: {len(frames) - 1} steps, return {total:.1f}, "
          f"last imbalance {info['imbalance']:.0f} MB -> {where}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
