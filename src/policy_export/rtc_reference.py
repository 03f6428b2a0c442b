"""LeRobot's RTC inference engine, stepped in control steps: the reference for RTC on the host.

``lerobot.rollout.inference.rtc.RTCInferenceEngine`` runs ``predict_action_chunk`` on a
background thread against the wall clock, so it cannot be compared step for step as it is.
:class:`LeRobotRTCEngine` makes the same decisions with LeRobot's own pieces (its RTC
``ActionQueue``, its ``_normalize_prev_actions_length``), in virtual time: each inference
takes a given whole number of control steps. Per control step ``t``, in this order:

1. a chunk whose inference ends at ``t`` is merged (``ActionQueue.merge(original, processed,
   real_delay, action_index_before_inference)``: it replaces the queue minus the first
   ``real_delay`` actions);
2. the inference thread, when idle and the queue holds ``<= queue_threshold`` actions, starts
   one from step ``t``'s observation with ``prev_chunk_left_over = get_left_over()`` padded or cut
   to ``execution_horizon`` rows and ``inference_delay = ceil(max latency seen / dt)`` (0 before
   any), which ends ``latency_steps(k)`` steps later (at once for 0);
3. the control loop pops the action for ``t`` (None when the queue is empty: the robot idles).

``predict(step, prev_chunk_left_over, inference_delay)`` returns ``(original, processed)``:
LeRobot's model-space chunk ``[chunk, A]`` and the postprocessed one (robot units), as torch
tensors. Used by the RTC host tests (with a fake policy) and by a family's RTC rollout reference
(with ``SmolVLAPolicy.predict_action_chunk``).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: ``predict(step, prev_chunk_left_over or None, inference_delay) -> (original, processed)``.
EnginePredict = Callable[[int, "torch.Tensor | None", int], "tuple[torch.Tensor, torch.Tensor]"]


@functools.cache
def normalize_prev_actions_length() -> Callable[..., Any]:
    """LeRobot's ``rollout.inference.rtc._normalize_prev_actions_length``, LeRobot's own code.

    ``import lerobot.rollout`` demands the ``datasets`` extra (for its recording side), which the
    inference path does not use; when it is missing, the function is compiled from LeRobot's
    installed source file instead of being retyped here."""
    try:
        from lerobot.rollout.inference.rtc import _normalize_prev_actions_length

        return _normalize_prev_actions_length
    except ImportError:
        pass
    import importlib.util

    import torch

    spec = importlib.util.find_spec("lerobot")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "rollout" / "inference" / "rtc.py"
    tree = ast.parse(path.read_text(), str(path))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_normalize_prev_actions_length")
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
    fn: Callable[..., Any] = namespace["_normalize_prev_actions_length"]
    return fn


@dataclass(frozen=True)
class EngineCall:
    """One inference the engine started: at which step, with what leftover length and delay."""

    step: int
    #: Rows of ``prev_chunk_left_over`` as the model got it (after padding to the horizon); 0 for None.
    prev_rows: int
    #: Real rows of the leftover before padding (``get_left_over()``'s length); None for None.
    leftover_rows: int | None
    inference_delay: int
    latency_steps: int


class LeRobotRTCEngine:
    """``RTCInferenceEngine._rtc_loop`` decisions with LeRobot's ``ActionQueue``, one control step at a time."""

    def __init__(
        self,
        predict: EnginePredict,
        *,
        execution_horizon: int,
        queue_threshold: int = 30,
        latency_steps: Callable[[int], int] = lambda k: 0,
        rtc_config: Any = None,
    ) -> None:
        from lerobot.policies.rtc import ActionQueue
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        self.cfg = rtc_config or RTCConfig(enabled=True, execution_horizon=execution_horizon)
        self.queue = ActionQueue(self.cfg)
        self.predict = predict
        self.threshold = queue_threshold
        self.latency_steps = latency_steps
        self.calls: list[EngineCall] = []
        self._max_latency = 0  # LatencyTracker.max(), in control steps
        self._inflight: tuple[int, Any, Any, int, int] | None = None  # (due, original, processed, idx, delay)

    def reset(self) -> None:
        """``RTCInferenceEngine.reset``: the queue is cleared (the latency tracker is not)."""
        self.queue.clear()
        self._inflight = None

    def _merge(self) -> None:
        assert self._inflight is not None
        _, original, processed, idx_before, delay = self._inflight
        self.queue.merge(original, processed, delay, idx_before)
        self._max_latency = max(self._max_latency, delay)
        self._inflight = None

    def step(self, t: int) -> Any:
        """Control step ``t``: returns the action tensor ``[A]`` the robot runs, or None (queue empty)."""
        if self._inflight is not None and self._inflight[0] <= t:
            self._merge()
        if self._inflight is None and self.queue.qsize() <= self.threshold:
            idx_before = self.queue.get_action_index()
            prev = self.queue.get_left_over()
            leftover_rows = None if prev is None else int(prev.shape[0])
            delay = self._max_latency  # ceil(latency_tracker.max() / dt) if latency else 0
            if prev is not None:
                prev = normalize_prev_actions_length()(prev, target_steps=self.cfg.execution_horizon)
            original, processed = self.predict(t, prev, delay)
            latency = int(self.latency_steps(len(self.calls)))
            self.calls.append(EngineCall(t, 0 if prev is None else int(prev.shape[0]), leftover_rows, delay, latency))
            self._inflight = (t + latency, original, processed, idx_before, latency)
            if latency == 0:
                self._merge()
        return self.queue.get()
