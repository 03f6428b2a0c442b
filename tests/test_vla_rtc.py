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
    rtc_feed,
)
from policy_export.spec import ArtifactMetadata

STATE_KEY, CAM_KEY = "observation.state", "observation.images.top"
S, A = 3, 3
CHUNK, HORIZON = 16, 5
MEAN = np.array([0.5, -1.0, 2.0], np.float32)
STD = np.array([2.0, 0.5, 1.5], np.float32)


LANG_LEN, MAX_ACTION_DIM = 6, 5
VOCAB = ["<pad>", "<unk>", "pick", "up", "the", "cube", "open", "drawer"]


def vla_metadata(chunk: int = CHUNK, horizon: int = HORIZON, rtc: bool = True) -> ArtifactMetadata:
    """The SmolVLA family's signature (state, camera, task tokens + mask, noise, RTC inputs), small."""
    from policy_export.spec import (
        ACTION_DIM,
        BATCH,
        STATE_DIM,
        CameraSpec,
        HostDecl,
        PolicySpec,
        Role,
        Signature,
        TensorDecl,
        action_chunk_output,
        observation_inputs,
    )
    from policy_export.spec import (
        CHUNK as CHUNK_DIM,
    )

    cams = (CameraSpec(CAM_KEY, "image", (3, 4, 5)),)
    inputs = (
        *observation_inputs(S, cams, STATE_KEY),
        TensorDecl("lang_tokens", Role.LANG_TOKENS, (BATCH, "L"), dtype="int64"),
        TensorDecl("lang_mask", Role.LANG_MASK, (BATCH, "L"), dtype="bool"),
        TensorDecl("noise", Role.NOISE, (BATCH, CHUNK_DIM, "max_action_dim")),
        *(
            (
                TensorDecl(PREV_CHUNK, Role.RTC_PREV_CHUNK, (BATCH, CHUNK_DIM, ACTION_DIM), units="robot"),
                TensorDecl(PREV_LEN, Role.RTC_PREV_LEN, (BATCH,), dtype="int64"),
                TensorDecl(DELAY, Role.RTC_DELAY, (BATCH,), dtype="int64"),
            )
            if rtc
            else ()
        ),
    )
    dims = {STATE_DIM: S, ACTION_DIM: A, CHUNK_DIM: chunk, "L": LANG_LEN, "max_action_dim": MAX_ACTION_DIM}
    tokenizer = {"max_length": LANG_LEN, "pad_token_id": 0, "padding": "max_length", "length": LANG_LEN}
    spec = PolicySpec(
        "smolvla", STATE_KEY, S, "action", A, cams, chunk, chunk, {}, "fake",
        Signature(inputs, (action_chunk_output(),), dims),
        HostDecl(tokenizer=tokenizer, rtc={"execution_horizon": horizon} if rtc else None),
    )  # fmt: skip
    return ArtifactMetadata(spec=spec, artifact_kind="test")


def task_tokenizer():
    """A word-level tokenizer built with the tokenizers library (the real one is tested in test_vla_tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from policy_export.runtime.tokenizer import TaskTokenizer, TokenizerSettings

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return TaskTokenizer(tok, TokenizerSettings(LANG_LEN, 0, "max_length", LANG_LEN))


def prefix_weights(delay: int, horizon: int, total: int) -> np.ndarray:
    """LeRobot's LINEAR prefix schedule (``RTCProcessor.get_prefix_weights``), numpy."""
    start = min(delay, horizon)
    n = total - max(total - horizon, 0) - start
    lin = np.linspace(1, 0, n + 2)[1:-1] if horizon > start and n > 0 else np.zeros(0)
    return np.concatenate([np.ones(min(start, total)), lin, np.zeros(max(total - horizon, 0))]).astype(np.float32)


def fake_model_space(
    state: np.ndarray, prev_n: np.ndarray, prev_len: int, delay: int, horizon: int, lang: float = 0.0
) -> np.ndarray:
    """The fake policy in model space: a chunk from the state (and task), pulled toward the (normalized)
    leftover with RTC's prefix weights over ``min(horizon, prev_len)`` rows, as ``RTCProcessor`` shapes them."""
    i = np.arange(CHUNK, dtype=np.float32)[:, None]
    base = (np.resize(state, A)[None, :] - MEAN) / STD + 0.05 * i + 0.01 * np.arange(A, dtype=np.float32) + lang
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
        # The exact signature, every input there with its dtype and shape.
        assert sorted(feed) == sorted(t.name for t in spec.signature.inputs), sorted(feed)
        assert feed["lang_tokens"].dtype == np.int64 and feed["lang_mask"].dtype == np.bool_
        assert feed["lang_tokens"].shape == feed["lang_mask"].shape == (batch, LANG_LEN)
        assert feed["noise"].shape == (batch, spec.chunk_size, MAX_ACTION_DIM) and feed["noise"].dtype == np.float32
        assert feed[PREV_CHUNK].shape == (batch, spec.chunk_size, spec.action_dim)
        assert feed[PREV_CHUNK].dtype == np.float32 and feed[PREV_LEN].dtype == np.int64
        assert feed[DELAY].dtype == np.int64 and feed[PREV_LEN].shape == feed[DELAY].shape == (batch,)
        if self.worker is not None:
            self.worker.clock.advance(self.latency(len(self.feeds)))
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        out = np.zeros((batch, spec.chunk_size, spec.action_dim), np.float32)
        horizon = spec.host.rtc["execution_horizon"]
        for b in range(batch):
            n = int(feed[PREV_LEN][b])
            prev_n = np.zeros((spec.chunk_size, A), np.float32)
            prev_n[:n] = (feed[PREV_CHUNK][b, :n] - MEAN) / STD
            lang = lang_value(feed["lang_tokens"][b], feed["lang_mask"][b])
            chunk_n = fake_model_space(feed["state"][b], prev_n, n, int(feed[DELAY][b]), horizon, lang)
            out[b] = chunk_n * STD + MEAN
        return out

    def close(self):
        pass


def lang_value(tokens: np.ndarray, mask: np.ndarray) -> float:
    """What the fake reads of the task: its real tokens (the mask matters: padding must not count)."""
    return float(np.sum(tokens[mask] * np.arange(1, mask.sum() + 1))) * 0.01


TASK = "pick up the cube"


def engine_predict(states: list[np.ndarray], horizon: int = HORIZON):
    """The same fake policy as LeRobot's engine calls it: leftover and chunk in model space (torch)."""
    import torch

    tokens, mask = task_tokenizer()(TASK)
    task_lang = lang_value(tokens[0], mask[0])
    assert task_lang > 0

    def predict(t, prev, delay):
        prev_n = np.zeros((CHUNK, A), np.float32)
        n = 0 if prev is None else int(prev.shape[0])
        if prev is not None:
            prev_n[:n] = prev.numpy()
        original = torch.from_numpy(fake_model_space(states[t], prev_n, n, delay, horizon, task_lang))
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
    client = PolicyClient(core, tokenizer=task_tokenizer(), seed=0)
    rt = RealtimeClient(client, fps, rtc=True, rtc_queue_threshold=threshold, clock=clock, worker=worker)
    out = []
    for t, state in enumerate(states):
        clock.set(t / fps)
        out.append((rt.select_action(_obs(state), task=TASK)[0], rt.last_tick))
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
    client = PolicyClient(core, tokenizer=task_tokenizer())
    rt = RealtimeClient(client, 10.0, merge="replace", buffer_time_s=0.8, clock=clock, worker=worker)
    replace_out = []
    for t, s in enumerate(states):
        clock.set(t / 10.0)
        replace_out.append((rt.select_action({**_obs(s), "task": TASK})[0], rt.last_tick))
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
    client = PolicyClient(core, rtc=True, rtc_queue_threshold=threshold, tokenizer=task_tokenizer())
    for t in range(steps):
        if t == reset_at:
            client.reset(robot=1)
            engines[1].reset()
        obs = {
            STATE_KEY: np.stack([states[b][t] for b in range(batch)]),
            CAM_KEY: np.full((batch, 4, 5, 3), 7, np.uint8),
        }
        got = client.select_action(obs, task=TASK)
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
    plain = vla_metadata(rtc=False)
    with pytest.raises(BadInputError, match="takes none: use merge='replace'"):
        PolicyClient(FakeVLACore(plain), rtc=True, tokenizer=task_tokenizer())
    client = PolicyClient(FakeVLACore(), tokenizer=task_tokenizer())
    with pytest.raises(BadInputError, match="RTC is a merge of its own"):
        RealtimeClient(client, 10.0, rtc=True, merge="ensemble", worker=InlineWorker())
    with pytest.raises(BadInputError, match="rtc_queue_threshold"):
        RealtimeClient(client, 10.0, rtc=True, rtc_queue_threshold=-1, worker=InlineWorker())
    with pytest.raises(BadInputError, match="paces merge='rtc' only"):
        RealtimeClient(client, 10.0, merge="replace", rtc_queue_threshold=5, worker=InlineWorker())
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
    rows = compare_merges(
        core, fps=10.0, steps=150, latency_s=0.35, seed=0, rtc_queue_threshold=8, task=TASK, tokenizer=task_tokenizer()
    )
    by = {r["merge"]: r for r in rows}
    assert list(by) == ["rtc", "replace", "ensemble"] and all(tuple(r) == MERGE_ROW_KEYS for r in rows)
    assert {r["delay_steps"] for r in rows} == {4} and all(r["fallback_ticks"] == 0 for r in rows)
    assert by["rtc"]["boundaries"] > 5 and by["replace"]["boundaries"] > 5
    assert by["rtc"]["boundary_jump_max"] < 0.5 * by["replace"]["boundary_jump_max"], rows
    # What switching chunks changed at the switch step: defined where the old chunk still had an action
    # (RTC asks with 8 left); replace here switches only when the old chunk ran out (nothing to compare).
    assert by["rtc"]["switch_jump_mean"] is not None and by["replace"]["switch_jump_mean"] is None
    assert by["ensemble"]["switch_jump_max"] is None


def test_fallback_free_rate_follows_the_latency():
    from policy_export.bench.realtime import fallback_free_fps

    core = FakeVLACore()
    chunk = PolicyClient(core, tokenizer=task_tokenizer()).predict_chunk(_obs(np.zeros(S, np.float32)), TASK)
    fast = fallback_free_fps(core, "rtc", 0.1, chunk=chunk, task=TASK, tokenizer=task_tokenizer())  # type: ignore[arg-type]
    slow = fallback_free_fps(core, "rtc", 1.0, chunk=chunk, task=TASK, tokenizer=task_tokenizer())  # type: ignore[arg-type]
    # One request in flight: a chunk of 16 must outlast the next chunk's latency.
    assert 0 < slow < fast and 5 < slow * 1.0 < 16 and 5 < fast * 0.1 < 16, (slow, fast)


# -- the task on the host ---------------------------------------------------------------------------------


def test_the_task_reaches_the_core_as_tokens_per_robot_and_missing_or_long_tasks_are_one_line():
    core = FakeVLACore()
    client = PolicyClient(core, tokenizer=task_tokenizer(), seed=0)
    obs = {STATE_KEY: np.zeros((2, S), np.float32), CAM_KEY: np.full((2, 4, 5, 3), 7, np.uint8)}
    client.select_action(obs, task=["pick up the cube", "open the drawer"])
    tokens, mask = core.feeds[-1]["lang_tokens"], core.feeds[-1]["lang_mask"]
    assert tokens[0, :4].tolist() == [2, 3, 4, 5] and tokens[1, :3].tolist() == [6, 4, 7]
    assert mask.sum(axis=1).tolist() == [4, 3] and (tokens[~mask] == 0).all()  # right-padded with the pad id
    for bad, message in [
        (None, "takes a language instruction"),
        ("pick up the cube " * 3, "longer than the model's tokenizer_max_length 6"),
        (["open the drawer"], "1 tasks for 2 robots"),
    ]:
        with pytest.raises(BadInputError, match=message) as err:
            PolicyClient(core, tokenizer=task_tokenizer()).select_action(obs, task=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(BadInputError, match="pass tokenizer="):
        PolicyClient(core)  # no artifact file beside which a tokenizer could lie
    # The realtime client refuses a long task on the caller's thread, at that tick.
    rt = RealtimeClient(PolicyClient(core, tokenizer=task_tokenizer()), 10.0, rtc=True, worker=InlineWorker())
    with pytest.raises(BadInputError, match="tokenizer_max_length"):
        rt.select_action(_obs(np.zeros(S, np.float32)), task="pick up the cube " * 3)


def test_predict_chunk_takes_lerobots_rtc_keywords_in_robot_units():
    core = FakeVLACore()
    client = PolicyClient(core, tokenizer=task_tokenizer())
    obs = _obs(np.ones(S, np.float32))
    free = client.predict_chunk(obs, TASK)
    assert core.feeds[-1][PREV_LEN].tolist() == [0]  # no leftover: no guidance
    leftover = free[0, 3:10] + 0.5
    guided = client.predict_chunk(obs, TASK, prev_chunk_left_over=leftover, inference_delay=2)
    assert core.feeds[-1][PREV_LEN].tolist() == [7] and core.feeds[-1][DELAY].tolist() == [2]
    np.testing.assert_array_equal(core.feeds[-1][PREV_CHUNK][0, :7], leftover)
    np.testing.assert_allclose(guided[0, :2], leftover[:2], atol=1e-5)  # the delayed rows follow the leftover
    with pytest.raises(BadInputError, match="outside \\[0, chunk_size=16\\)"):
        client.predict_chunk(obs, TASK, prev_chunk_left_over=leftover, inference_delay=16)
    with pytest.raises(BadInputError, match="expected"):
        client.predict_chunk(obs, TASK, prev_chunk_left_over=np.zeros((3, A + 2)))
