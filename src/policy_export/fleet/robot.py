"""One simulated robot: its own process, its own client, a paced control loop.

Why a process per robot: robots are separate machines. Threads in one interpreter would share
one GIL and one gRPC channel, so the client side would become the bottleneck being measured.

Each robot holds one fixed observation (drawn from the model's signature, seeded per robot),
so every chunk any replica returns must equal the first one: a chunk that differs is an
action from another model, counted as such (``wrong_model_chunks``), never hidden by a
tolerance wide enough for a different model.

Counts, per robot:

- ``missed_ticks``: tick deadlines the control loop overran (it was still waiting for a
  chunk when the next tick was due);
- ``fallback_ticks``: ticks at which no fresh policy action was executed (the robot held its
  last action): the missed ticks, plus ticks lost to a failed request or a failover.

With the synchronous client a chunk boundary blocks the loop, so the two differ only by
failures; a client that fetches chunks ahead (the real-time client) turns most late chunks
into no missed tick at all.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A chunk further than this from the robot's first chunk (same observation) is another model's.
SAME_MODEL_ATOL = 1e-3


@dataclass(frozen=True)
class RobotPlan:
    index: int
    urls: tuple[str, ...]  # replica list, this robot's preferred replica first
    model: str
    fps: float  # 0: unpaced, requests back to back (the concurrency sweep)
    duration_s: float
    timeout_s: float
    seed: int
    identity: str | None = None  # the model every replica must serve (None: whatever answers first)


def observation(spec: Any, image_format: str, seed: int) -> dict[str, np.ndarray]:
    """A LeRobot-style observation for this robot (no batch axis), numbers that look like data."""
    rng = np.random.default_rng(seed)
    obs = {spec.state_key: rng.standard_normal(spec.state_dim).astype(np.float32)}
    for cam in spec.cameras:
        c, h, w = cam.shape
        obs[cam.key] = (
            rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
            if image_format == "uint8"
            else rng.random((c, h, w), dtype=np.float32)
        )
    return obs


class _Robot:
    def __init__(self, plan: RobotPlan) -> None:
        self.plan = plan
        self.latencies_ms: list[float] = []
        self.first_chunk: np.ndarray | None = None
        self.identity: str | None = plan.identity
        self.counts = {
            "ticks": 0,
            "missed_ticks": 0,
            "fallback_ticks": 0,
            "requests": 0,
            "failed_requests": 0,
            "failovers": 0,
            "wrong_model_chunks": 0,
            "refused_replicas": 0,
        }
        self.replicas_used: list[str] = []
        self.client: Any = None
        self.url_index = 0
        self.obs: dict[str, np.ndarray] = {}

    # -- connection and replicas ----------------------------------------------------------
    def connect(self, start: int) -> None:
        """The first replica (from ``start``, in list order) that answers with the same model."""
        from policy_export.errors import PolicyExportError
        from policy_export.runtime import PolicyClient

        errors = []
        urls = self.plan.urls
        for k in range(len(urls)):
            i = (start + k) % len(urls)
            try:
                client = PolicyClient.from_triton(urls[i], self.plan.model, timeout_s=self.plan.timeout_s)
            except PolicyExportError as exc:
                errors.append(str(exc))
                continue
            ident = identity(client.metadata)
            if self.identity is not None and ident != self.identity:
                self.counts["refused_replicas"] += 1  # a different model behind the same name: never run it
                client.close()
                errors.append(f"{urls[i]} serves a different model under {self.plan.model!r}")
                continue
            self.identity = ident
            self.client, self.url_index = client, i
            self.replicas_used.append(urls[i])
            self._instrument()
            if not self.obs:
                self.obs = observation(client.metadata.spec, client.metadata.image_format, self.plan.seed)
            return
        from policy_export.errors import UnavailableError

        raise UnavailableError("; ".join(errors) or "no replica")

    def _instrument(self) -> None:
        """Time every chunk request and check its answer; the client itself is unchanged."""
        backend = self.client.backend
        infer = backend.infer

        def timed(feed: dict[str, np.ndarray]) -> np.ndarray:
            t0 = time.perf_counter()
            self.counts["requests"] += 1
            try:
                chunk = infer(feed)
            except Exception:
                self.counts["failed_requests"] += 1
                raise
            self.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            if self.first_chunk is None:
                self.first_chunk = chunk.copy()
            elif chunk.shape != self.first_chunk.shape or not np.allclose(
                chunk, self.first_chunk, rtol=0, atol=SAME_MODEL_ATOL
            ):
                self.counts["wrong_model_chunks"] += 1
            return chunk

        backend.infer = timed

    def failover(self) -> None:
        from policy_export.errors import PolicyExportError

        if self.client is not None:
            self.client.close()
            self.client = None
        try:
            self.connect(self.url_index + 1)
            self.counts["failovers"] += 1
        except PolicyExportError:
            self.client = None

    # -- loops ----------------------------------------------------------------------------
    def paced(self, start: float) -> None:
        from policy_export.errors import PolicyExportError

        period = 1.0 / self.plan.fps
        n_ticks = max(1, round(self.plan.duration_s * self.plan.fps))
        k = 0
        while k < n_ticks:
            due = start + k * period
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            ok = False
            if self.client is None:
                self.failover()
            if self.client is not None:
                try:
                    self.client.select_action(self.obs)
                    ok = True
                except PolicyExportError:
                    self.failover()
            end = time.monotonic()
            # Tick k's action is on time if it comes before tick k+1 is due.
            overrun = max(0, math.ceil((end - due) / period) - 1)
            overrun = min(overrun, n_ticks - k - 1)
            self.counts["ticks"] += 1 + overrun
            self.counts["missed_ticks"] += overrun
            self.counts["fallback_ticks"] += overrun + (0 if ok else 1)
            k += 1 + overrun

    def unpaced(self, start: float) -> None:
        from policy_export.errors import PolicyExportError

        while time.monotonic() < start:
            time.sleep(start - time.monotonic())
        end = start + self.plan.duration_s
        feed = None
        while time.monotonic() < end:
            if self.client is None:
                self.failover()
                feed = None
                if self.client is None:
                    continue
            if feed is None:
                feed = self.client.adapter(self.obs).feed()
            try:
                self.client.backend.infer(feed)
            except PolicyExportError:
                self.failover()
                feed = None

    def result(self) -> dict[str, Any]:
        return {
            "robot": self.plan.index,
            **self.counts,
            "latencies_ms": self.latencies_ms,
            "replicas_used": self.replicas_used,
            "identity": self.identity,
        }


def identity(meta: Any) -> str:
    """What makes two served models the same policy for a robot: normalization, shapes, format."""
    spec = meta.spec
    return f"{spec.norm_hash}|{spec.chunk_size}x{spec.action_dim}|{meta.image_format}|{meta.precision}"


def run_robot(plan: RobotPlan, results: Any, go: Any, start_at: Any) -> None:
    """Process entry point: connect, say ready, wait for the common start, run, report.

    ``results`` is a multiprocessing queue; ``go`` an event; ``start_at`` a shared double
    (wall-clock start time, the same for every robot).
    """
    robot = _Robot(plan)
    try:
        robot.connect(plan.index % len(plan.urls))
        results.put(("ready", plan.index, None))
        if not go.wait(timeout=120):
            results.put(("error", plan.index, "never told to start"))
            return
        start = time.monotonic() + max(0.0, start_at.value - time.time())
        if plan.fps > 0:
            robot.paced(start)
        else:
            robot.unpaced(start)
        results.put(("done", plan.index, robot.result()))
    except Exception as exc:  # reported to the parent as one line; the bench decides
        from policy_export.errors import PolicyExportError

        message = str(exc) if isinstance(exc, PolicyExportError) else traceback.format_exc(limit=3)
        results.put(("error", plan.index, message))
    finally:
        if robot.client is not None:
            robot.client.close()
