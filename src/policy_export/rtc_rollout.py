"""``verify --rollout`` for a model with RTC inputs: the robot's real-time client against LeRobot's RTC engine.

Chunk parity proves the core's guidance; this proves the RTC loop the robot runs. On one side
``RealtimeClient(..., rtc=True)`` drives the exported artifact (its real runner) in virtual
time: every chunk but the episode's first takes ``delay`` control steps, the client tokenizes
the task, draws the noise and sends its unexecuted leftover and expected delay. On the other,
:class:`~policy_export.rtc_reference.LeRobotRTCEngine` makes LeRobot's ``RTCInferenceEngine``
decisions with its own ``ActionQueue`` around the checkpoint's own policy
(preprocessor with the task string -> ``predict_action_chunk(batch, noise=...,
prev_chunk_left_over=..., inference_delay=...)`` with RTC enabled -> postprocessor), handed the
noise the client drew for the same request. A fresh random observation at every step; both
must ask for a chunk at the same steps and run the same action at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.errors import BadInputError
from policy_export.rtc_reference import LeRobotRTCEngine

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint
    from policy_export.runtime import CoreHandle

#: The task both sides are given (any instruction; LeRobot's tokenizer and the host's must agree on it).
DEFAULT_TASK = "pick up the red cube and place it in the box"
#: Control rate of the virtual clock (only the delay in steps matters).
FPS = 30.0


@dataclass
class RTCTrace:
    """Both sides' actions ``[steps, A]`` and the steps at which each asked for a chunk."""

    reference: np.ndarray
    candidate: np.ndarray
    reference_requests: list[int]
    candidate_requests: list[int]
    delay_steps: int
    fallback_ticks: int
    #: Steps at which LeRobot's engine asked and the client did not (no shared noise there).
    unmatched: list[int]


class _Recorded:
    """The artifact's core, with each call's inputs kept by the control step that asked and a
    fixed virtual latency charged to the worker's clock."""

    def __init__(self, infer: Any, worker: Any, delay_steps: int) -> None:
        self.inner_infer, self.worker, self.delay_steps = infer, worker, delay_steps
        self.step = 0
        self.feeds: dict[int, dict[str, np.ndarray]] = {}

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        out = self.inner_infer(feed)
        # The first chunk is waited for (both sides start from it); the others take a hair under
        # delay_steps ticks, so that they land at the tick delay_steps after they were asked.
        if self.feeds:
            self.worker.clock.advance(max(0.0, (self.delay_steps - 0.01) / FPS))
        self.feeds[self.step] = {k: np.array(v) for k, v in feed.items()}
        return out


def run_rtc_rollout(
    ckpt: LoadedCheckpoint,
    backend: CoreHandle,
    *,
    steps: int,
    delay_steps: int,
    seed: int = 0,
    image_format: str = "float32",
    task: str = DEFAULT_TASK,
    queue_threshold: int | None = None,
    tokenizer: Any = None,
) -> RTCTrace:
    """Drive both sides ``steps`` control steps with chunks taking ``delay_steps`` (after the first)."""
    import torch

    from policy_export.inputs import checkpoint_inputs
    from policy_export.reference import lerobot_observation
    from policy_export.runtime import InlineWorker, ManualClock, PolicyClient, RealtimeClient
    from policy_export.runtime.rtc import DEFAULT_QUEUE_THRESHOLD, rtc_settings

    threshold = DEFAULT_QUEUE_THRESHOLD if queue_threshold is None else queue_threshold
    rtc = rtc_settings(backend.metadata, threshold)
    if not 0 <= delay_steps < rtc.chunk_size:
        raise BadInputError(f"RTC rollout delay {delay_steps} is outside [0, chunk_size={rtc.chunk_size})")
    worker, clock = InlineWorker(), ManualClock()
    recorded = _Recorded(backend.infer, worker, delay_steps)  # the method as it is, before it is wrapped
    backend.infer = recorded.infer  # type: ignore[method-assign]  # instance attribute, removed below
    rng = np.random.default_rng([seed, delay_steps, 0xA7C])
    feeds = [checkpoint_inputs(ckpt, 1, rng, image_format, observation_only=True) for _ in range(steps)]

    policy = ckpt.policy
    saved = getattr(policy.config, "rtc_config", None)
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    decl = dict(getattr(backend.metadata.spec.host, "rtc", None) or {})
    from lerobot.configs import RTCAttentionSchedule

    policy.config.rtc_config = RTCConfig(
        enabled=True,
        execution_horizon=rtc.execution_horizon,
        max_guidance_weight=float(decl.get("max_guidance_weight", 10.0)),
        prefix_attention_schedule=RTCAttentionSchedule(decl.get("prefix_attention_schedule", "LINEAR")),
    )
    policy.init_rtc_processor()
    policy.reset()

    missing: list[int] = []

    def predict(t: int, prev: Any, delay: int) -> tuple[Any, Any]:
        core_feed = recorded.feeds.get(t)
        if core_feed is None:  # the client did not ask at this step: no shared noise; the traces will differ
            missing.append(t)
            noise = None
        else:
            noise = torch.from_numpy(np.ascontiguousarray(core_feed["noise"]))
        obs = lerobot_observation(ckpt, feeds[t], image_format)
        obs["task"] = [task]
        # Not under inference_mode: LeRobot's RTC guidance takes an autograd step inside (as its engine runs it).
        with torch.no_grad():
            batch = dict(ckpt.preprocessor(obs))
        actions = policy.predict_action_chunk(batch, noise=noise, inference_delay=delay, prev_chunk_left_over=prev)
        with torch.no_grad():
            return actions.squeeze(0).clone(), ckpt.postprocessor(actions).squeeze(0)

    engine = LeRobotRTCEngine(
        predict,
        execution_horizon=rtc.execution_horizon,
        queue_threshold=threshold,
        latency_steps=lambda k: 0 if k == 0 else delay_steps,
        rtc_config=policy.config.rtc_config,
    )
    client = PolicyClient(backend, seed=seed, tokenizer=tokenizer)
    refs, outs = [], []
    fallbacks = 0
    try:
        # Not closed: closing would close the backend, which the caller shares between checks (the
        # virtual worker holds no thread).
        rt = RealtimeClient(client, FPS, rtc=True, rtc_queue_threshold=threshold, clock=clock, worker=worker)
        for t in range(steps):
            clock.set(t / FPS)
            recorded.step = t
            obs = {ckpt.spec.state_key: feeds[t]["state"][0]}  # one robot, unbatched, as a robot loop holds it
            obs.update({cam.key: feeds[t][cam.input_name][0] for cam in ckpt.spec.cameras})
            out = np.asarray(rt.select_action(obs, task=task))
            fallbacks += int(rt.last_tick is not None and rt.last_tick.fallback is not None)
            outs.append(out.reshape(-1))
            ref = engine.step(t)
            refs.append(np.full(out.size, np.nan, np.float32) if ref is None else ref.numpy().reshape(-1))
    finally:
        del backend.infer
        policy.config.rtc_config = saved
        policy.init_rtc_processor()
        policy.reset()
    return RTCTrace(
        np.stack(refs).astype(np.float32),
        np.stack(outs).astype(np.float32),
        [c.step for c in engine.calls],
        sorted(recorded.feeds),
        delay_steps,
        fallbacks,
        missing,
    )
