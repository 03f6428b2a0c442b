"""One episode per policy: LeRobot's eager policy, or an artifact through the robot runtime.

Every side sees its own copy of the same environment from the same seed and acts in closed
loop, so what is compared is what a robot would do. The eager side is LeRobot's path as
``lerobot-eval`` runs it (``preprocess_observation``, the env's processors, the policy's
preprocessor, ``select_action``, postprocessor) through the family's reference rollout; the
artifact side is :class:`~policy_export.runtime.PolicyClient` (or a
:class:`~policy_export.runtime.realtime.RealtimeClient` in simulated time) fed the raw
simulator frames, as a robot host would. A sampling family (Diffusion) draws its noise from
one seeded generator per episode on both sides, so both get the same draws.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.errors import BadInputError
from policy_export.families import family_for
from policy_export.runtime.backends import CoreHandle
from policy_export.sim.envs import SimEnv, robot_observation
from policy_export.spec import ArtifactMetadata

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint
    from policy_export.families import ReferenceRollout, RolloutMode

#: Acts on one raw simulator observation: the action ``[1, A]`` float32 in robot units.
StepFn = Callable[[dict[str, Any]], np.ndarray]


def noise_seed(seed: int, episode_seed: int) -> int:
    """The noise generator's seed of one episode: the same on every side, different per episode."""
    return int(np.random.SeedSequence([seed, episode_seed]).generate_state(1)[0])


@dataclass
class Episode:
    """What one policy did in one episode."""

    runner: str
    episode: int
    seed: int
    actions: np.ndarray  # [steps, A] float32, robot units
    rewards: list[float]
    success: bool
    frames: list[np.ndarray] = field(default_factory=list)
    #: Realtime runs: ticks that sent a fallback action, and actions skipped as already in the past.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.actions)

    @property
    def total_return(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))


def _success(info: dict[str, Any]) -> bool:
    """LeRobot-eval's reading of a vector env's step info (``final_info`` or ``is_success``)."""
    final = info.get("final_info")
    if isinstance(final, dict) and "is_success" in final:
        return bool(np.any(final["is_success"]))
    return bool(np.any(info.get("is_success", False)))


def run_episode(sim: SimEnv, policy: SidePolicy, episode: int, seed: int, *, record: bool = False) -> Episode:
    """Reset ``sim`` with ``seed`` and let ``policy`` act until the env ends the episode."""
    from lerobot.envs.utils import NEW_ROLLOUT_OPTION

    raw, _ = sim.env.reset(seed=[seed], options={NEW_ROLLOUT_OPTION: True})
    actions, rewards, success, frames = [], [], False, []
    with policy.episode(seed) as act:
        while True:
            if record:
                frames.append(np.asarray(sim.env.call("render")[0]))
            action = np.asarray(act(raw), dtype=np.float32).reshape(1, -1)
            actions.append(action[0])
            raw, reward, terminated, truncated, info = sim.env.step(action)
            rewards.append(float(np.asarray(reward).reshape(-1)[0]))
            success = success or _success(info)
            if bool(np.any(terminated)) or bool(np.any(truncated)):
                break
    extra = policy.episode_stats()
    if record:
        frames.append(np.asarray(sim.env.call("render")[0]))
    return Episode(policy.name, episode, seed, np.stack(actions), rewards, success, frames, extra)


class SidePolicy(ABC):
    """One side of the comparison: ``episode(seed)`` yields the step function for that episode."""

    name: str

    @abstractmethod
    def episode(self, seed: int) -> AbstractEpisode: ...

    def episode_stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None


AbstractEpisode = Any  # a context manager yielding a StepFn (contextlib's generator type)


def deployed_mode(ckpt: LoadedCheckpoint) -> RolloutMode:
    """The rollout mode ``PolicyClient`` runs by default for this checkpoint (what eager must run too)."""
    from policy_export.rollout import deployed_settings
    from policy_export.runtime.shim import ShimSettings

    deployed = deployed_settings(ArtifactMetadata(spec=ckpt.spec, artifact_kind="checkpoint"))
    for mode in family_for(ckpt.spec.policy_type).rollout_modes(ckpt.spec):
        if (ShimSettings.from_spec(mode.spec), mode.spec.host) == deployed:
            return mode
    raise BadInputError(f"{ckpt.path}: no LeRobot rollout mode matches the runtime's settings {deployed}")


class EagerPolicy(SidePolicy):
    """LeRobot's policy as ``lerobot-eval`` drives it; ``perturb_seed`` moves every float observation
    value one float32 ulp up or down at random (the chaos baseline: eager against itself)."""

    def __init__(self, ckpt: LoadedCheckpoint, sim: SimEnv, seed: int, perturb_seed: int | None = None) -> None:
        self.ckpt, self.sim, self.seed, self.perturb_seed = ckpt, sim, seed, perturb_seed
        self.name = "eager" if perturb_seed is None else "eager+1ulp"
        self.mode = deployed_mode(ckpt)
        self.noise_meta = ArtifactMetadata(spec=ckpt.spec, artifact_kind="checkpoint")
        self.task: list[str] = []

    @contextmanager
    def episode(self, seed: int) -> Iterator[StepFn]:
        import torch
        from lerobot.envs.utils import preprocess_observation
        from lerobot.utils.constants import ACTION

        from policy_export.runtime.host import host_for

        # The inputs the robot's host makes (a sampling family's noise), drawn as PolicyClient's host draws them.
        host = host_for(self.noise_meta, seed=noise_seed(self.seed, seed))

        def draws(rows: int) -> dict[str, np.ndarray]:
            return {k: v for provider in host.providers for k, v in provider(rows).items()}

        n_action_steps = self.mode.spec.n_action_steps
        gen = None
        if self.perturb_seed is not None:
            gen = torch.Generator().manual_seed(noise_seed(self.perturb_seed, seed))
        step = [0]
        self.task = env_task(self.sim.env)
        with family_for(self.ckpt.spec.policy_type).reference_rollout(self.ckpt, self.mode) as ref:
            ref.reset()

            def act(raw: dict[str, Any]) -> np.ndarray:
                obs = preprocess_observation(raw)
                if gen is not None:
                    obs = {k: _one_ulp(v, gen) for k, v in obs.items()}
                obs["task"] = self.task
                obs = self.sim.preprocessor(obs)
                core_feed = draws(1) if host.providers and step[0] % n_action_steps == 0 else None
                action = self._select(ref, obs, core_feed)
                step[0] += 1
                out = self.sim.postprocessor({ACTION: torch.from_numpy(action)})[ACTION]
                return np.asarray(out, dtype=np.float32)

            yield act

    @staticmethod
    def _select(ref: ReferenceRollout, obs: dict[str, Any], core_feed: dict[str, np.ndarray] | None) -> np.ndarray:
        before = ref.calls
        action = ref.select_lerobot(obs, core_feed)
        if core_feed is not None and ref.calls == before:
            raise RuntimeError("eager policy drew noise for a chunk it did not predict: the noise would go out of step")
        if core_feed is None and ref.calls != before and ref.ckpt.spec.noise_inputs:
            raise RuntimeError("eager policy predicted a chunk without the episode's noise")
        return action


def env_task(env: Any) -> list[str]:
    """The task ``lerobot-eval`` puts in the observation: the env's ``task_description``, else its ``task``."""
    for attr in ("task_description", "task"):
        try:
            return [str(t) for t in env.call(attr)]
        except (AttributeError, NotImplementedError):
            continue
    return [""] * env.num_envs


def _one_ulp(value: Any, gen: Any) -> Any:
    """A float tensor moved one float32 ulp up or down per element (other values as they are)."""
    import torch

    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return value
    up = torch.rand(value.shape, generator=gen) < 0.5
    target = torch.where(up, torch.full_like(value, torch.inf), torch.full_like(value, -torch.inf))
    return torch.nextafter(value, target)


class _Shared(CoreHandle):
    """A core shared by every episode's client: closing a client leaves it open (the owner closes it);
    ``latency_s`` of simulated time is charged to an inline worker's clock per call (``RealtimeClient``)."""

    def __init__(self, inner: CoreHandle, latency_s: float = 0.0, worker: Any = None) -> None:
        self.inner, self.latency_s, self.worker = inner, latency_s, worker
        self.metadata, self.name, self.where = inner.metadata, inner.name, inner.where

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        out = self.inner.infer(feed)
        if self.worker is not None and self.latency_s:
            self.worker.clock.advance(self.latency_s)
        return out

    def close(self) -> None:
        return None


class ClientPolicy(SidePolicy):
    """An artifact through ``PolicyClient`` (sync); with ``latency_steps`` not None, through
    ``RealtimeClient`` in simulated time: the core's answer arrives ``latency_steps`` control
    steps after the observation it was asked with, so latency compensation, the merge and the
    fallbacks run as on a robot, deterministically (no wall clock)."""

    def __init__(
        self,
        name: str,
        backend: CoreHandle,
        fps: float,
        seed: int,
        latency_steps: int | None = None,
        task: str | None = None,
        tokenizer: Path | None = None,
        merge: str | None = None,
    ) -> None:
        self.name, self.backend, self.fps, self.seed, self.latency_steps = name, backend, fps, seed, latency_steps
        #: A language model's instruction, handed over with every observation as a robot host would (the
        #: env's task, which the eager side's observation carries too), and the artifact's tokenizer file
        #: (the core may be a server's); None for the other families.
        self.task, self.tokenizer, self.merge = task, tokenizer, merge
        self._stats: dict[str, Any] = {}

    def _observe(self, raw: dict[str, Any]) -> dict[str, Any]:
        obs: dict[str, Any] = robot_observation(raw)
        if self.task is not None:
            obs["task"] = self.task
        return obs

    @property
    def metadata(self) -> ArtifactMetadata:
        return self.backend.metadata

    @contextmanager
    def episode(self, seed: int) -> Iterator[StepFn]:
        from policy_export.runtime import PolicyClient

        nseed = noise_seed(self.seed, seed)
        if self.latency_steps is None:
            client = PolicyClient(_Shared(self.backend), seed=nseed, tokenizer=self.tokenizer)
            yield lambda raw: client.select_action(self._observe(raw))
            self._stats = {}
            return
        from policy_export.runtime.realtime import InlineWorker, ManualClock, RealtimeClient

        worker, clock = InlineWorker(), ManualClock()
        core = _Shared(self.backend, self.latency_steps / self.fps, worker)
        # K = 0: ask only when the buffer is dry, i.e. exactly when LeRobot's queue is (= the sync client).
        options: dict[str, Any] = {"buffer_time_s": 0.0} if self.latency_steps == 0 else {}
        if self.merge is not None:
            options["merge"] = self.merge
        client = PolicyClient(core, seed=nseed, tokenizer=self.tokenizer)
        rt = RealtimeClient(client, self.fps, clock=clock, worker=worker, **options)
        try:

            def act(raw: dict[str, Any]) -> np.ndarray:
                clock.advance(1 / self.fps)
                return rt.select_action(self._observe(raw))

            yield act
            stats = rt.stats()
            self._stats = {
                k: stats[k] for k in ("fallback_ticks", "actions_skipped_latency", "chunks_received", "stale_dropped")
            }
            self._stats["merge"] = str(rt.merge)
        finally:
            rt.close()

    def episode_stats(self) -> dict[str, Any]:
        return dict(self._stats)

    def close(self) -> None:
        self.backend.close()
