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

With the synchronous ``PolicyClient`` a chunk boundary blocks the loop, so the two differ only
by failures. The ``RealtimeClient`` (the default) fetches chunks ahead on a worker thread: its
loop almost never overruns, and a late chunk shows up as a fallback tick (the client's own
count) instead. Its first action of an episode waits for the first chunk by design; that wait
is before the run's first tick, not in it.

Replicas and failover are the runtime's own (``TritonBackend.connect`` / ``reconnect``: the
next replica, refusing one that serves another model); this module only watches them through
:class:`Watched`, which times each chunk request and checks its answer.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.runtime.backends import Backend
from policy_export.spec import DRAWN_ROLES

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

    from policy_export.runtime import RealtimeClient
    from policy_export.spec import PolicySpec

#: The instruction a language model's robots are given unless --task names another.
DEFAULT_TASK = "pick up the red cube and place it in the box"
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
    realtime: bool = True  # RealtimeClient (paced runs); False: the synchronous PolicyClient
    buffer_time_s: float | None = None  # RealtimeClient: ask for a chunk below this playback (None: automatic)
    task: str | None = None  # a language model's instruction (sent as observation["task"])
    tokenizer: str | None = None  # its tokenizer file (the repository's <model file>.tokenizer.json)
    #: The client's version policy: None pins the newest at start, "latest" follows upgrades, "N" pins N.
    version: str | None = None
    #: Rolling upgrades: the chunk each version must answer for this robot's observation (computed apart,
    #: e.g. from the artifacts themselves). A chunk is then a wrong-model chunk when it is not the answering
    #: version's, when a pinned robot gets another version, or when a following robot goes back a version.
    references: dict[str, Any] | None = None


def observation(spec: PolicySpec, image_format: str, seed: int) -> dict[str, np.ndarray]:
    """A LeRobot-style observation for this robot (no batch axis), numbers that look like data."""
    rng = np.random.default_rng(seed)
    obs: dict[str, np.ndarray] = {spec.state_key: rng.standard_normal(spec.state_dim).astype(np.float32)}
    for cam in spec.cameras:
        c, h, w = cam.shape
        obs[cam.key] = (
            rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
            if image_format == "uint8"
            else rng.random((c, h, w), dtype=np.float32)
        )
    return obs


class Watched(Backend):
    """A backend seen from the bench: every chunk request timed and its answer checked.

    A wrapper, not a stand-in: calls go to the real backend; a reconnect (the runtime's own
    replica failover) returns the new backend wrapped the same way, so nothing is missed.
    """

    def __init__(self, inner: Backend, robot: _Robot) -> None:
        self.inner, self.robot = inner, robot
        self.metadata, self.name, self.where = inner.metadata, inner.name, inner.where
        self.url = str(getattr(inner, "url", "?"))
        robot.replicas_used.append(self.url)

    def __getattr__(self, name: str) -> Any:  # forwards any attribute: metadata, where, timeout_s, identity, ...
        return getattr(self.inner, name)

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        robot = self.robot
        # A sampling model's chunk depends on the host-drawn noise: every request reuses the robot's
        # first draw, so that one observation keeps giving one chunk and another model stays visible.
        drawn = [t.name for t in self.metadata.spec.signature.with_role(*DRAWN_ROLES)]
        if drawn:
            if not robot.first_drawn:
                robot.first_drawn = {n: np.array(feed[n]) for n in drawn}
            elif all(feed[n].shape == robot.first_drawn[n].shape for n in drawn):
                feed = {**feed, **robot.first_drawn}
        t0 = time.perf_counter()
        try:
            chunk = self.inner.infer(feed)
        except Exception:
            robot.counts["requests"] += 1
            robot.counts["failed_requests"] += 1
            raise
        # Counted when answered: a request still in flight when the run ends is not the run's.
        robot.counts["requests"] += 1
        robot.answered_by[self.url] = robot.answered_by.get(self.url, 0) + 1
        robot.latencies_ms.append((time.perf_counter() - t0) * 1e3)
        if drawn and not np.array_equal(feed[drawn[0]], robot.first_drawn[drawn[0]]):
            return chunk  # a fresh draw of noise (not the pinned one): no same-model evidence
        if robot.plan.references is not None:
            robot.check_version(str(getattr(self.inner, "version", "")), chunk)
        elif robot.first_chunk is None:
            robot.first_chunk = chunk.copy()
        elif chunk.shape != robot.first_chunk.shape or not np.allclose(
            chunk, robot.first_chunk, rtol=0, atol=SAME_MODEL_ATOL
        ):
            robot.counts["wrong_model_chunks"] += 1
        return chunk

    def probe(self) -> bool | None:
        return self.inner.probe()

    def reconnect(self) -> Watched | None:
        new = self.inner.reconnect()
        self.robot.counts["failovers"] += 1
        return None if new is None else Watched(new, self.robot)

    def close(self) -> None:
        self.inner.close()


class _Robot:
    def __init__(self, plan: RobotPlan) -> None:
        self.plan = plan
        self.latencies_ms: list[float] = []
        self.first_chunk: np.ndarray | None = None
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
        #: Answered chunk requests per replica URL: a failover is proven by answers, not by a switch.
        self.answered_by: dict[str, int] = {}
        #: (request number, version) each time the answering version changed.
        self.versions_seen: list[tuple[int, str]] = []
        self.client: Any = None  # PolicyClient from connect() on: the run methods use it unchecked
        self.realtime: RealtimeClient | None = None  # around the client
        self.obs: dict[str, Any] = {}
        self.first_drawn: dict[str, np.ndarray] = {}
        self.realtime_stats: dict[str, Any] = {}
        self.elapsed_s = plan.duration_s

    def check_version(self, version: str, chunk: np.ndarray) -> None:
        refs = self.plan.references or {}
        ref = refs.get(version)
        wrong = ref is None or chunk.shape != ref.shape or not np.allclose(chunk, ref, rtol=0, atol=SAME_MODEL_ATOL)
        pinned = self.plan.version not in (None, "", "latest")
        if pinned and version != self.plan.version:
            wrong = True
        if self.versions_seen and version != self.versions_seen[-1][1]:
            if self.plan.version == "latest" and version.isdigit() and int(version) < int(self.versions_seen[-1][1]):
                wrong = True  # a following robot never goes back
        if not self.versions_seen or version != self.versions_seen[-1][1]:
            self.versions_seen.append((self.counts["requests"], version))
        if wrong:
            self.counts["wrong_model_chunks"] += 1

    def connect(self) -> None:
        """This robot's preferred replica first, then the others (the runtime's replica list)."""
        from policy_export.runtime import PolicyClient
        from policy_export.runtime.backends import ModelChangedError

        urls = self.plan.urls
        k = self.plan.index % len(urls)
        client = PolicyClient.from_triton(
            list(urls[k:] + urls[:k]),
            self.plan.model,
            self.plan.version,
            timeout_s=self.plan.timeout_s,
            tokenizer=self.plan.tokenizer,
        )
        if self.plan.identity is not None and identity(client.backend) != self.plan.identity:
            client.close()
            raise ModelChangedError(f"{client.backend.where}: serves another model than the other replicas")
        client.backend = Watched(client.backend, self)
        self.client = client
        obs: dict[str, Any] = observation(client.metadata.spec, client.metadata.image_format, self.plan.seed)
        if client.metadata.spec.host.tokenizer:
            obs["task"] = self.plan.task or DEFAULT_TASK
        self.obs = obs
        if self.plan.realtime and self.plan.fps > 0:
            from policy_export.runtime.realtime import RealtimeClient

            spec = client.metadata.spec
            horizon = spec.chunk_size if spec.host.ensemble_coeff is not None else spec.n_action_steps
            # LeRobot's guide asks again at 0.5 s of buffered playback; a short chunk (10 actions
            # at 30 Hz is 0.33 s) asks at half its playback instead, one request in flight.
            # An ensembling model asks at every step: buffer_time_s is only passed when the plan sets it
            # (and then refused, one line), never made up for it.
            buffer_s = None
            if spec.host.ensemble_coeff is None or self.plan.buffer_time_s is not None:
                buffer_s = self.plan.buffer_time_s or min(0.5, horizon / self.plan.fps / 2)
            self.realtime = RealtimeClient(client, self.plan.fps, buffer_time_s=buffer_s)

    def _failover(self) -> None:
        """The runtime's reconnect: the next replica serving the same model. Another model is
        refused (and ends this robot); nobody answering leaves the client as is for the next try."""
        from policy_export.errors import PolicyExportError
        from policy_export.runtime.backends import ModelChangedError

        try:
            new = self.client.backend.reconnect()
        except ModelChangedError:
            self.counts["refused_replicas"] += 1
            raise
        except PolicyExportError:
            return
        if new is not None:
            self.client.backend = new

    def _sync_step(self) -> bool:
        """One synchronous ``select_action``; on a failure, fail over to the next replica."""
        from policy_export.errors import PolicyExportError
        from policy_export.runtime.backends import ModelChangedError

        try:
            self.client.select_action(self.obs)
            return True
        except ModelChangedError:
            raise
        except PolicyExportError:
            self._failover()
            return False

    def paced(self) -> None:
        period = 1.0 / self.plan.fps
        n_ticks = max(1, round(self.plan.duration_s * self.plan.fps))
        rt = self.realtime
        if rt is not None:
            rt.select_action(self.obs)  # the episode's first chunk (waited for by design)
            self.counts["ticks"] += 1
        start = time.monotonic()
        k = self.counts["ticks"]
        while k < n_ticks:
            due = start + k * period
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            if rt is not None:
                rt.select_action(self.obs)
                ok = rt.last_tick is not None and rt.last_tick.fallback is None
            else:
                ok = self._sync_step()
            end = time.monotonic()
            # Tick k's action is on time if it comes before tick k+1 is due.
            overrun = min(max(0, math.ceil((end - due) / period) - 1), n_ticks - k - 1)
            self.counts["ticks"] += 1 + overrun
            self.counts["missed_ticks"] += overrun
            self.counts["fallback_ticks"] += overrun + (0 if ok else 1)
            k += 1 + overrun
        if rt is not None:
            self.realtime_stats = {**rt.stats(), "buffer_time_s": rt.settings.buffer_time_s}
            rt.close()  # the worker's last request ends (answered or cut off) before the counts are read
            self.realtime = None

    def unpaced(self) -> None:
        from policy_export.errors import PolicyExportError
        from policy_export.runtime.backends import ModelChangedError

        start = time.monotonic()
        end = start + self.plan.duration_s
        feed = self.client.adapter(self.obs).feed()
        while time.monotonic() < end:
            try:
                self.client.backend.infer(feed)
            except ModelChangedError:
                raise
            except PolicyExportError:
                self._failover()
                time.sleep(0.1)  # a refused connection fails at once: do not spin on it
        # The last request ends after ``end``: rates are per the time really spent.
        self.elapsed_s = time.monotonic() - start

    def result(self) -> dict[str, Any]:
        keep = (
            *("state", "chunks_requested", "chunks_received", "actions_skipped_latency", "stale_dropped"),
            *("fallback_ticks", "reconnects", "failures", "streaming_fraction", "buffer_time_s"),
        )
        return {
            "robot": self.plan.index,
            "elapsed_s": self.elapsed_s,
            **self.counts,
            "latencies_ms": self.latencies_ms,
            "replicas_used": self.replicas_used,
            "answered_by": self.answered_by,
            "versions_seen": self.versions_seen,
            "realtime": {k: self.realtime_stats[k] for k in keep if k in self.realtime_stats},
        }

    def close(self) -> None:
        if self.realtime is not None:
            self.realtime.close()
        elif self.client is not None:
            self.client.close()


def identity(backend: Any) -> str:  # a TritonBackend, reached as PolicyClient.backend (typed Backend)
    """The runtime's model identity (signature, normalization hash, the version's sha256), as text
    that crosses a process boundary."""
    import hashlib

    ident = backend.identity
    signature = hashlib.sha256(repr(ident.signature).encode()).hexdigest()[:12]
    return f"normalization {ident.norm_hash[:12]}, sha256 {ident.sha256[:12]}, signature {signature}"


def run_robot(plan: RobotPlan, results: Queue[tuple[str, int, object]], go: Event) -> None:
    """Process entry point: connect, say ready, wait for the common start, run, report.

    ``results`` is a multiprocessing queue, ``go`` an event set when every robot is ready.
    """
    robot = _Robot(plan)
    try:
        robot.connect()
        results.put(("ready", plan.index, None))
        if not go.wait(timeout=180):
            results.put(("error", plan.index, "never told to start"))
            return
        if plan.fps > 0:
            robot.paced()
        else:
            robot.unpaced()
        results.put(("done", plan.index, robot.result()))
    except Exception as exc:  # reported to the parent as one line; the bench decides
        from policy_export.errors import PolicyExportError

        message = str(exc) if isinstance(exc, PolicyExportError) else traceback.format_exc(limit=3)
        results.put(("error", plan.index, message))
    finally:
        robot.close()
