"""Real-time chunking on the host against LeRobot's own RTC engine semantics.

The candidate is this project's robot-side code (``RealtimeClient(..., rtc=True)`` in virtual
time, and the synchronous ``PolicyClient(..., rtc=True)``) around a small deterministic fake core
with the SmolVLA core's exact RTC signature (``rtc_prev_chunk`` robot units, ``rtc_prev_len``,
``rtc_delay``; it normalizes internally). The reference is :class:`LeRobotRTCEngine`: LeRobot's
``ActionQueue`` and leftover padding, stepped as ``RTCInferenceEngine._rtc_loop`` steps, calling
the same fake policy in model space. Equal actions at every step mean the host asked at the same
steps, sent the same leftover (in robot units, normalized by the core) and delay, and merged the
guided chunk as LeRobot's queue does.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from policy_export.errors import BadInputError
from policy_export.rtc_reference import LeRobotRTCEngine
from policy_export.runtime import CoreHandle, InlineWorker, ManualClock, PolicyClient, RealtimeClient
from policy_export.runtime.rtc import (
    DELAY,
    PREV_CHUNK,
    PREV_LEN,
    RTCQueue,
    RTCSettings,
    leftover_batch,
    no_guidance,
    rtc_feed,
)
from policy_export.spec import ArtifactMetadata

STATE_KEY, CAM_KEY = "observation.state", "observation.images.top"
S, A = 3, 3
CHUNK, HORIZON = 16, 5
MEAN = np.array([0.5, -1.0, 2.0], np.float32)
STD = np.array([2.0, 0.5, 1.5], np.float32)


def vla_metadata(chunk: int = CHUNK, horizon: int = HORIZON) -> ArtifactMetadata:
    spec = {
        "policy_type": "smolvla",
        "state_key": STATE_KEY,
        "state_dim": S,
        "action_key": "action",
        "action_dim": A,
        "cameras": [{"key": CAM_KEY, "input_name": "image", "shape": [3, 4, 5]}],
        "chunk_size": chunk,
        "n_action_steps": chunk,
        "normalization": {},
        "norm_hash": "fake",
        "family": {"rtc": {"execution_horizon": horizon}},
    }
    return ArtifactMetadata.from_json(json.dumps({"spec": spec, "artifact_kind": "test", "schema": 2}))


def prefix_weights(delay: int, horizon: int, total: int) -> np.ndarray:
    """LeRobot's LINEAR prefix schedule (``RTCProcessor.get_prefix_weights``), numpy."""
    start = min(delay, horizon)
    n = total - max(total - horizon, 0) - start
    lin = np.linspace(1, 0, n + 2)[1:-1] if horizon > start and n > 0 else np.zeros(0)
    return np.concatenate([np.ones(min(start, total)), lin, np.zeros(max(total - horizon, 0))]).astype(np.float32)


def fake_model_space(state: np.ndarray, prev_n: np.ndarray, prev_len: int, delay: int, horizon: int) -> np.ndarray:
    """The fake policy in model space: a chunk from the state, pulled toward the (normalized) leftover
    with RTC's prefix weights over ``min(horizon, prev_len)`` rows, as ``RTCProcessor`` shapes them."""
    i = np.arange(CHUNK, dtype=np.float32)[:, None]
    base = (np.resize(state, A)[None, :] - MEAN) / STD + 0.05 * i + 0.01 * np.arange(A, dtype=np.float32)
    base = np.sin(base).astype(np.float32)  # not affine: a wrong leftover or delay cannot cancel out
    if prev_len == 0:
        return base
    w = prefix_weights(delay, min(horizon, prev_len), CHUNK)[:, None]
    return (base + w * (prev_n - base)).astype(np.float32)


class FakeVLACore(CoreHandle):
    """The core's RTC contract: leftover in robot units, normalized inside; rows past ``rtc_prev_len`` unused.

    Charges ``latency(call)`` seconds to the virtual worker's clock (real-time tests)."""

    name = "fake-vla"
    where = "fake VLA core"

    def __init__(self, metadata=None, worker: InlineWorker | None = None, latency=lambda call: 0.0):
        self.metadata = metadata or vla_metadata()
        self.worker, self.latency = worker, latency
        self.feeds: list[dict[str, np.ndarray]] = []

    def infer(self, feed):
        spec = self.metadata.spec
        batch = len(feed["state"])
        assert feed[PREV_CHUNK].shape == (batch, spec.chunk_size, spec.action_dim)
        assert feed[PREV_CHUNK].dtype == np.float32 and feed[PREV_LEN].dtype == np.int64
        assert feed[DELAY].dtype == np.int64 and feed[PREV_LEN].shape == feed[DELAY].shape == (batch,)
        if self.worker is not None:
            self.worker.clock.advance(self.latency(len(self.feeds)))
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        out = np.zeros((batch, spec.chunk_size, spec.action_dim), np.float32)
        horizon = spec.family["rtc"]["execution_horizon"]
        for b in range(batch):
            n = int(feed[PREV_LEN][b])
            prev_n = np.zeros((spec.chunk_size, A), np.float32)
            prev_n[:n] = (feed[PREV_CHUNK][b, :n] - MEAN) / STD
            chunk_n = fake_model_space(feed["state"][b], prev_n, n, int(feed[DELAY][b]), horizon)
            out[b] = chunk_n * STD + MEAN
        return out

    def close(self):
        pass


def engine_predict(states: list[np.ndarray], horizon: int = HORIZON):
    """The same fake policy as LeRobot's engine calls it: leftover and chunk in model space (torch)."""
    import torch

    def predict(t, prev, delay):
        prev_n = np.zeros((CHUNK, A), np.float32)
        n = 0 if prev is None else int(prev.shape[0])
        if prev is not None:
            prev_n[:n] = prev.numpy()
        original = torch.from_numpy(fake_model_space(states[t], prev_n, n, delay, horizon))
        return original, original * torch.from_numpy(STD) + torch.from_numpy(MEAN)  # the postprocessor

    return predict


def _obs(state: np.ndarray) -> dict[str, np.ndarray]:
    return {STATE_KEY: state, CAM_KEY: np.full((4, 5, 3), 7, np.uint8)}


def _states(steps: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, S).astype(np.float32) for _ in range(steps)]


def run_realtime(states, delay_steps: int, fps: float = 10.0, threshold: int = 8, first_delay: int = 0):
    """RealtimeClient(rtc=True) in virtual time; every chunk but the first takes ``delay_steps`` ticks
    (a hair less, so that it lands before that tick)."""
    worker, clock = InlineWorker(), ManualClock()

    def latency(call):
        d = first_delay if call == 0 else delay_steps
        return max(0.0, (d - 0.01) / fps)

    core = FakeVLACore(worker=worker, latency=latency)
    rt = RealtimeClient(PolicyClient(core), fps, rtc=True, rtc_queue_threshold=threshold, clock=clock, worker=worker)
    out = []
    for t, state in enumerate(states):
        clock.set(t / fps)
        out.append((rt.select_action(_obs(state))[0], rt.last_tick))
    return out, core, rt


@pytest.mark.parametrize("delay_steps", [0, 1, 3, 5])
def test_realtime_rtc_equals_lerobots_rtc_engine_under_a_fake_clock(delay_steps):
    steps, threshold = 70, 8
    states = _states(steps)
    engine = LeRobotRTCEngine(
        engine_predict(states),
        execution_horizon=HORIZON,
        queue_threshold=threshold,
        latency_steps=lambda k: 0 if k == 0 else delay_steps,
    )
    expected = [engine.step(t) for t in range(steps)]
    assert all(a is not None for a in expected)  # the engine never ran dry: a fair comparison
    out, core, rt = run_realtime(states, delay_steps, threshold=threshold)

    # Asked at the same steps, with the same leftover length and delay.
    assert len(core.feeds) == len(engine.calls)
    asked = [int(np.flatnonzero([np.array_equal(f["state"][0], s) for s in states])[0]) for f in core.feeds]
    assert asked == [c.step for c in engine.calls]
    assert [int(f[PREV_LEN][0]) for f in core.feeds] == [c.leftover_rows or 0 for c in engine.calls]
    assert [int(f[DELAY][0]) for f in core.feeds] == [c.inference_delay for c in engine.calls]
    assert min(c.leftover_rows or HORIZON for c in engine.calls) >= HORIZON  # the regime where both pad alike
    # ... and ran the same action at every step.
    for t, ((action, tick), ref) in enumerate(zip(out, expected, strict=True)):
        assert tick.fallback is None, t
        np.testing.assert_allclose(action, ref.numpy(), rtol=0, atol=2e-6, err_msg=f"step {t}")
    stats = rt.stats()
    assert stats["fallback_ticks"] == 0 and stats["merge"] == "rtc"
    if delay_steps:
        assert stats["actions_skipped_latency"] == delay_steps * (len(core.feeds) - 1)
        assert max(c.inference_delay for c in engine.calls) == delay_steps  # the delay really was sent
    # The guidance was on: a request with a leftover pulls the new chunk's first actions onto it.
    assert any(int(f[PREV_LEN][0]) > 0 for f in core.feeds)


def test_rtc_leftover_is_the_unexecuted_rest_in_robot_units():
    states = _states(40, seed=3)
    out, core, _ = run_realtime(states, delay_steps=2, threshold=8)
    executed = np.stack([a for a, _ in out])
    for f in core.feeds[1:]:
        t = int(np.flatnonzero([np.array_equal(f["state"][0], s) for s in states])[0])
        n = int(f[PREV_LEN][0])
        # The rows sent are what the buffer would run from step t on: the first ones are executed
        # while the request is in flight, exactly (robot units, not normalized).
        ran = executed[t : t + 2]
        np.testing.assert_array_equal(f[PREV_CHUNK][0, : len(ran)], ran)
        assert n > 0 and not f[PREV_CHUNK][0, n:].any()  # left-aligned, zero-padded


def test_rtc_chunk_boundary_is_smoother_than_replace_at_the_same_delay():
    """Guidance is what RTC is for: where chunks meet, the step from one action to the next is smaller."""
    states = _states(120, seed=5)

    def boundary_jump(out):
        jumps = [float(np.abs(a - b).max()) for (b, tb), (a, ta) in itertools.pairwise(out) if ta.chunk != tb.chunk]
        return max(jumps), len(jumps)

    rtc_out, _, _ = run_realtime(states, delay_steps=3)
    worker, clock = InlineWorker(), ManualClock()
    core = FakeVLACore(worker=worker, latency=lambda call: 0.0 if call == 0 else 0.299)
    infer = core.infer
    core.infer = lambda feed: infer({**no_guidance(len(feed["state"]), CHUNK, A), **feed})  # type: ignore[method-assign]
    rt = RealtimeClient(PolicyClient(core), 10.0, merge="replace", buffer_time_s=0.8, clock=clock, worker=worker)
    replace_out = []
    for t, s in enumerate(states):
        clock.set(t / 10.0)
        replace_out.append((rt.select_action(_obs(s))[0], rt.last_tick))
    (rtc_jump, n_rtc), (replace_jump, n_replace) = boundary_jump(rtc_out), boundary_jump(replace_out)
    assert n_rtc > 5 and n_replace > 5
    assert rtc_jump < 0.5 * replace_jump, (rtc_jump, replace_jump)


# -- the synchronous client ----------------------------------------------------------------------------


def test_policy_client_rtc_equals_lerobots_engine_at_zero_latency_per_robot():
    steps, threshold, batch = 50, 6, 2
    states = [_states(steps, seed=10 + b) for b in range(batch)]
    reset_at = 23  # robot 1 starts a new episode mid-queue; robot 0 carries on
    engines = [LeRobotRTCEngine(engine_predict(states[b]), execution_horizon=HORIZON, queue_threshold=threshold)
               for b in range(batch)]  # fmt: skip
    core = FakeVLACore()
    client = PolicyClient(core, rtc=True, rtc_queue_threshold=threshold)
    for t in range(steps):
        if t == reset_at:
            client.reset(robot=1)
            engines[1].reset()
        obs = {
            STATE_KEY: np.stack([states[b][t] for b in range(batch)]),
            CAM_KEY: np.full((batch, 4, 5, 3), 7, np.uint8),
        }
        got = client.select_action(obs)
        for b in range(batch):
            np.testing.assert_allclose(got[b], engines[b].step(t).numpy(), rtol=0, atol=2e-6, err_msg=f"{t} {b}")
    assert len(core.feeds) > 4
    assert sum(len(e.calls) for e in engines) == sum(len(f["state"]) for f in core.feeds)  # only robots that asked


# -- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leftover", "delay", "message"),
    [
        (np.zeros((CHUNK + 1, A)), 0, "expected"),
        (np.zeros((4, A + 1)), 0, "expected"),
        (np.zeros((3, 2, 4, A)), 0, "expected"),
        (np.zeros((4, A)), CHUNK, "outside \\[0, chunk_size=16\\)"),
        (np.zeros((4, A)), -1, "outside"),
        (np.zeros((4, A)), 1.5, "whole number"),
        (np.full((4, A), np.nan), 0, "NaN"),
    ],
)
def test_wrong_rtc_inputs_are_one_line(leftover, delay, message):
    with pytest.raises(BadInputError, match=message) as err:
        leftover_batch(leftover, delay, 2, CHUNK, A)
    assert "\n" not in str(err.value)


def test_rtc_on_a_model_without_rtc_inputs_and_bad_settings_are_one_line():
    meta = vla_metadata()
    plain = ArtifactMetadata.from_json(
        json.dumps({"spec": {**json.loads(meta.to_json())["spec"], "family": {}}, "artifact_kind": "t", "schema": 2})
    )
    with pytest.raises(BadInputError, match="takes none: use merge='replace'"):
        PolicyClient(FakeVLACore(plain), rtc=True)
    with pytest.raises(BadInputError, match="RTC is a merge of its own"):
        RealtimeClient(PolicyClient(FakeVLACore()), 10.0, rtc=True, merge="ensemble", worker=InlineWorker())
    with pytest.raises(BadInputError, match="rtc_queue_threshold"):
        RealtimeClient(PolicyClient(FakeVLACore()), 10.0, rtc=True, rtc_queue_threshold=-1, worker=InlineWorker())
    with pytest.raises(BadInputError, match="execution_horizon"):
        RTCSettings(CHUNK, A, CHUNK + 1)


def test_rtc_feed_and_queue_shapes():
    feed = rtc_feed([None, np.ones((3, A))], [0, 2], CHUNK, A)
    assert (
        feed[PREV_CHUNK].shape == (2, CHUNK, A) and feed[PREV_LEN].tolist() == [0, 3] and feed[DELAY].tolist() == [0, 2]
    )
    q = RTCQueue(RTCSettings(CHUNK, A, HORIZON, queue_threshold=4))
    assert q.pending(2).tolist() == [0, 1] and q.leftover(0) is None
    q.push(np.arange(2 * CHUNK * A, dtype=np.float32).reshape(2, CHUNK, A), np.arange(2), delays=[0, 3])
    assert q.remaining().tolist() == [CHUNK, CHUNK - 3]
    np.testing.assert_array_equal(q.pop()[1], np.arange(CHUNK * A, 2 * CHUNK * A).reshape(CHUNK, A)[3])
    with pytest.raises(BadInputError, match="expected"):
        q.push(np.zeros((1, CHUNK - 1, A)), np.arange(1))


# -- bench-realtime's comparison, on the fake core -------------------------------------------------------


def test_bench_boundary_jump_rtc_below_replace_and_ensemble_at_the_same_latency():
    """bench-realtime's own figures (virtual time, one latency for all merges, the same toy robot)."""
    from policy_export.bench.realtime import MERGE_ROW_KEYS, compare_merges

    core = FakeVLACore()
    core.input_names = ["state", "image", PREV_CHUNK, PREV_LEN, DELAY]  # the fake's signature, for the bench
    infer = core.infer
    core.infer = lambda feed: infer({**no_guidance(len(feed["state"]), CHUNK, A), **feed})  # type: ignore[method-assign]
    rows = compare_merges(core, fps=10.0, steps=150, latency_s=0.35, seed=0, rtc_queue_threshold=8)
    by = {r["merge"]: r for r in rows}
    assert list(by) == ["rtc", "replace", "ensemble"] and all(tuple(r) == MERGE_ROW_KEYS for r in rows)
    assert {r["delay_steps"] for r in rows} == {4} and all(r["fallback_ticks"] == 0 for r in rows)
    assert by["rtc"]["boundaries"] > 5 and by["replace"]["boundaries"] > 5
    assert by["rtc"]["boundary_jump_max"] < 0.5 * by["replace"]["boundary_jump_max"], rows


def test_fallback_free_rate_follows_the_latency():
    from policy_export.bench.realtime import fallback_free_fps

    core = FakeVLACore()
    chunk = core.infer({"state": np.zeros((1, S), np.float32), **no_guidance(1, CHUNK, A)})
    fast = fallback_free_fps(core, "rtc", 0.1, chunk=chunk)  # type: ignore[arg-type]
    slow = fallback_free_fps(core, "rtc", 1.0, chunk=chunk)  # type: ignore[arg-type]
    # One request in flight: a chunk of 16 must outlast the next chunk's latency.
    assert 0 < slow < fast and 5 < slow * 1.0 < 16 and 5 < fast * 0.1 < 16, (slow, fast)
