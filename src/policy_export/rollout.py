"""Rollout parity: the exported core + host-side shim against LeRobot's stateful ``select_action``.

Chunk parity proves the core; this proves what the robot actually executes. LeRobot's
policy (preprocessor -> ``select_action`` -> postprocessor, ``policy.reset()`` at episode
start) and a :class:`~policy_export.runtime.PolicyClient` on the artifact are driven side by
side for ``steps`` control steps with a fresh random observation at every step, across a
mid-episode reset placed where a queue is half consumed. Both sides' core calls are
counted too: the shim must ask for a chunk at exactly the steps LeRobot does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.action_error import action_std, per_dim_errors
from policy_export.artifacts import ArtifactInfo, check_compatible
from policy_export.checkpoint import LoadedCheckpoint
from policy_export.enums import Status, ToleranceSpace
from policy_export.errors import BadInputError, UnavailableError
from policy_export.families import RolloutMode, family_for
from policy_export.inputs import checkpoint_inputs
from policy_export.parity_report import ArtifactCheck, BatchResult, apply_std_contract, gated_compare
from policy_export.spec import ArtifactMetadata, Role

if TYPE_CHECKING:
    from policy_export.action_space import ActionScale
    from policy_export.runtime import CoreHandle, PolicyClient

Progress = Callable[[], None] | None


def rollout_modes(ckpt: LoadedCheckpoint) -> list[RolloutMode]:
    """The modes the checkpoint's family rolls out (each a shim setting and LeRobot's matching config)."""
    return family_for(ckpt.spec.policy_type).rollout_modes(ckpt.spec)


def deployed_settings(metadata: ArtifactMetadata) -> tuple[object, ...]:
    """What ``PolicyClient`` runs for a model when given no settings: its shim settings and the
    declared host side (history, tokenizer, RTC)."""
    from policy_export.runtime.shim import ShimSettings

    return (ShimSettings.from_spec(metadata.spec), metadata.spec.host)


def _flat(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec's fields with the family's own ones beside the common ones (for naming what differs)."""
    host = {f"host.{k}": v for k, v in (spec.get("host") or {}).items()}
    return (
        {k: v for k, v in spec.items() if k not in ("family", "host", "signature")}
        | dict(spec.get("family") or {})
        | host
    )


def check_settings(info: ArtifactInfo, ckpt: LoadedCheckpoint) -> None:
    """The artifact's shim settings (what ``PolicyClient`` runs) must be the checkpoint's (what LeRobot runs).

    Otherwise a rollout compares two different controllers, and a pass would certify settings
    the robot will not use.
    """
    theirs = deployed_settings(info.metadata)
    ours = deployed_settings(ArtifactMetadata(spec=ckpt.spec, artifact_kind="checkpoint"))
    if theirs != ours:
        a, c = (_flat(s.to_dict()) for s in (info.metadata.spec, ckpt.spec))
        diffs = [
            f"{name} {a[name]} (checkpoint: {c[name]})"
            for name in a
            if name not in ("normalization", "norm_hash") and a[name] != c.get(name)
        ] or [f"shim settings {theirs} (checkpoint: {ours})"]
        raise BadInputError(
            f"{info.path}: carries {', '.join(diffs)}, which PolicyClient would run; LeRobot's select_action runs "
            "the checkpoint's: re-export the artifact from this checkpoint"
        )


def reset_steps(steps: int, n_action_steps: int) -> list[int]:
    """Episode starts: step 0 and one mid-rollout reset that lands inside a half-used queue."""
    mid = steps // 2
    if n_action_steps > 1 and mid % n_action_steps == 0:
        mid += 1
    return [0, mid] if 0 < mid < steps else [0]


def robot_observation(ckpt: LoadedCheckpoint, feed: dict[str, np.ndarray], batched: bool) -> dict[str, np.ndarray]:
    """The LeRobot-style dict a robot loop holds (uint8 HWC frames for a uint8 artifact)."""
    obs = {ckpt.spec.state_key: feed["state"]}
    for cam in ckpt.spec.cameras:
        obs[cam.key] = feed[cam.input_name]
    return obs if batched else {k: v[0] for k, v in obs.items()}


def step_observation(
    ckpt: LoadedCheckpoint, batch_size: int, rng: np.random.Generator, image_format: str, inputs: str
) -> dict[str, np.ndarray]:
    """One control step's observation: iid draws, or (``inputs="frames"``, what reduced-precision artifacts
    are judged on) frame-like images with the dataset's colour statistics, without a history axis."""
    if inputs != "frames":
        return checkpoint_inputs(ckpt, batch_size, rng, image_format, observation_only=True)
    from policy_export.frames import synthetic_batch

    spec = ckpt.spec
    seed = [int(x) for x in rng.integers(0, 2**31, size=2)]
    feed = synthetic_batch(spec, ckpt.input_stats, batch_size, seed, image_format)
    names = ["state", *(c.input_name for c in spec.cameras)]
    return {n: feed[n][:, -1] if spec.n_obs_steps is not None else feed[n] for n in names}


@dataclass
class RolloutTrace:
    """Both sides' actions ``[steps, B, A]`` and how often each asked its network for a chunk."""

    reference: np.ndarray
    candidate: np.ndarray
    resets: list[int]
    lerobot_chunk_calls: int
    client_core_calls: int
    #: Median wall time of one ``client.select_action`` (core call or not), in ms.
    step_ms_median: float


#: The instruction a rollout of a language model gives at every step (the host tokenizes it as a robot's would).
ROLLOUT_TASK = "pick up the red cube and place it in the bin"


def run_rollout(
    ckpt: LoadedCheckpoint,
    client: PolicyClient,
    mode: RolloutMode,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    image_format: str,
    progress: Progress = None,
    inputs: str = "uniform",
) -> RolloutTrace:
    """Drive LeRobot and ``client`` side by side for ``steps`` control steps.

    The client steps first: what its core was fed at a step (the host-drawn noise of a
    sampling family) is handed to LeRobot's ``select_action`` for the same step.
    """
    resets = reset_steps(steps, mode.spec.n_action_steps)
    calls = [0]
    fed: list[dict[str, np.ndarray] | None] = [None]
    infer = client.backend.infer

    def counted(feed: dict[str, np.ndarray]) -> np.ndarray:
        calls[0] += 1
        fed[0] = feed
        return infer(feed)

    # An instance attribute over the method, removed again below: counts without changing the handle.
    client.backend.infer = counted  # type: ignore[method-assign]
    refs, outs, times = [], [], []
    obs_names = ckpt.spec.observation_input_names
    # A language model's host tokenizes the task (and pi0.5's state) at every step; LeRobot gets those tokens.
    task = ROLLOUT_TASK if any(t.role is Role.LANG_TOKENS for t in ckpt.spec.signature.inputs) else None
    try:
        with family_for(ckpt.spec.policy_type).reference_rollout(ckpt, mode) as ref:
            ref.task = task
            for step in range(steps):
                if step in resets:
                    ref.reset()
                    client.reset()
                rng = np.random.default_rng([seed, batch_size, step, int(mode.spec.host.merge == "ensemble")])
                feed = step_observation(ckpt, batch_size, rng, image_format, inputs)
                # One robot: hand the client an unbatched observation, as a robot loop would.
                obs = robot_observation(ckpt, feed, batched=batch_size > 1)
                fed[0] = None
                t0 = time.perf_counter()
                out = client.select_action(obs, task)
                times.append((time.perf_counter() - t0) * 1e3)
                outs.append(np.asarray(out, dtype=np.float32))
                refs.append(ref.select_action({n: feed[n] for n in obs_names}, image_format, fed[0]))
                if progress is not None:
                    progress()
            lerobot_calls = ref.calls
    finally:
        del client.backend.infer
    return RolloutTrace(np.stack(refs), np.stack(outs), resets, lerobot_calls, calls[0], float(np.median(times)))


@dataclass
class RolloutResult(BatchResult):
    """A rollout row: statistics over ``[steps, B, A]`` plus what happened at each step."""

    resets: list[int] | None = None
    #: Per control step, the largest difference in the check's tolerance space.
    per_step_max_abs: list[float] | None = None
    lerobot_chunk_calls: int = 0
    client_core_calls: int = 0


def _check_mode(
    check: ArtifactCheck,
    ckpt: LoadedCheckpoint,
    client: PolicyClient,
    mode: RolloutMode,
    *,
    steps: int,
    batch_sizes: list[int],
    rtol: float,
    seed: int,
    progress: Progress,
) -> None:
    """One rollout per batch size, each a row of ``check``."""
    for bs in batch_sizes:
        client.reset()
        trace = run_rollout(
            ckpt,
            client,
            mode,
            steps=steps,
            batch_size=bs,
            seed=seed,
            image_format=check.image_format,
            progress=progress,
            inputs=check.inputs,
        )
        scale = ckpt.action_scale
        stats, robot = gated_compare(trace.reference, trace.candidate, check.atol, rtol, check.tolerance_space, scale)
        if trace.lerobot_chunk_calls != trace.client_core_calls:
            stats.passed = False
            check.reason = (
                f"batch {bs}: the shim asked the core for {trace.client_core_calls} chunks, "
                f"LeRobot's select_action for {trace.lerobot_chunk_calls}"
            )
        check.results.append(
            RolloutResult(
                batch_size=bs,
                samples=steps,
                stats=stats,
                infer_ms_median=trace.step_ms_median,
                robot_units=robot,
                resets=trace.resets,
                per_step_max_abs=_per_step_max_abs(
                    trace.reference, trace.candidate, check.tolerance_space, scale, steps
                ),
                lerobot_chunk_calls=trace.lerobot_chunk_calls,
                client_core_calls=trace.client_core_calls,
                dims=per_dim_errors(trace.reference, trace.candidate, _std(ckpt)),
                tolerance_std=check.tolerance_std,
            )
        )
        if not check.results[-1].passed:
            check.status = Status.FAILED


def _std(ckpt: LoadedCheckpoint) -> np.ndarray:
    return action_std(ckpt.output_stats, ckpt.spec.action_key, ckpt.spec.action_dim)


def _per_step_max_abs(
    reference: np.ndarray, candidate: np.ndarray, space: str, scale: ActionScale, steps: int
) -> list[float]:
    """The worst difference at each control step, in the space the gate judged: where a rollout drifts."""
    if space == ToleranceSpace.NORMALIZED:
        diff = np.abs(scale.normalize(reference) - scale.normalize(candidate))
    else:
        diff = np.abs(reference.astype(np.float64) - candidate)
    return [float(x) for x in diff.reshape(steps, -1).max(axis=1)]


def rollout_checks(
    ckpt: LoadedCheckpoint,
    infos: list[ArtifactInfo],
    *,
    steps: int,
    batch_sizes: list[int],
    atol: float | None = None,
    rtol: float = 0.0,
    seed: int = 0,
    ort_provider: str = "cpu",
    per_artifact_atol: dict[str, float] | None = None,
    progress: Progress = None,
    allow_other_checkpoint: bool = False,
    tolerance_space: ToleranceSpace | str = ToleranceSpace.NORMALIZED,
    tolerance_std: float | None = None,
) -> list[ArtifactCheck]:
    """One check per (artifact, mode), one row per batch size, in verify's report scheme.

    Modes come from each artifact's own metadata, and the mode a deployed client runs is run
    with the settings ``PolicyClient`` derives itself (which must equal the checkpoint's,
    :func:`check_settings`)."""
    if steps < 2:
        raise BadInputError(f"--rollout takes the number of control steps (>= 2), got {steps}")
    from policy_export.runtime import LocalCore, PolicyClient, ShimSettings

    checks = []
    # Refuse a foreign artifact before any slow work.
    warnings = [check_compatible(info, ckpt.spec, ckpt.path, allow_other_checkpoint) for info in infos]
    for info in infos:
        check_settings(info, ckpt)
    for info, warn in zip(infos, warnings, strict=True):
        spec = info.metadata.spec
        modes = family_for(spec.policy_type).rollout_modes(spec)
        mode_checks = [
            ArtifactCheck.start(
                info,
                atol=atol,
                rtol=rtol,
                per_artifact_atol=per_artifact_atol,
                warnings=warn,
                check=mode.label,
                tolerance_space=tolerance_space,
            )
            for mode in modes
        ]
        for check in mode_checks:  # bf16/int8: the same per-dimension contract as verify's chunk checks
            apply_std_contract(check, tolerance_std, _std(ckpt), ckpt.action_scale)
        checks += mode_checks
        try:
            backend = LocalCore(Path(info.path), provider=ort_provider)  # loaded once, shared by every mode
        except UnavailableError as exc:
            for check in mode_checks:
                check.status, check.reason = Status.SKIPPED, str(exc)
            continue
        try:
            deployed = deployed_settings(info.metadata)
            for mode, check in zip(modes, mode_checks, strict=True):
                check.runner = backend.name
                # The mode a deployed client runs is run as it runs it: settings read from the artifact.
                mode_settings = ShimSettings.from_spec(mode.spec)
                same = (mode_settings, mode.spec.host) == deployed
                client = PolicyClient(backend) if same else PolicyClient(backend, mode_settings)
                _check_mode(
                    check,
                    ckpt,
                    client,
                    mode,
                    steps=steps,
                    batch_sizes=batch_sizes,
                    rtol=rtol,
                    seed=seed,
                    progress=progress,
                )
            if spec.host.rtc:  # the robot's RTC loop against LeRobot's RTC engine, at fixed delays
                for delay in RTC_ROLLOUT_DELAYS:
                    check = ArtifactCheck.start(
                        info,
                        atol=atol,
                        rtol=rtol,
                        per_artifact_atol=per_artifact_atol,
                        warnings=warn,
                        check=f"rollout rtc delay={delay}",
                    )
                    apply_std_contract(check, tolerance_std, _std(ckpt), ckpt.action_scale)
                    check.runner = backend.name
                    checks.append(check)
                    _check_rtc(check, ckpt, backend, steps=steps, delay=delay, rtol=rtol, seed=seed)
        finally:
            backend.close()
    return checks


#: Control steps each chunk takes in the RTC rollouts (after the episode's first): none, and a few.
RTC_ROLLOUT_DELAYS = (0, 3)


def _check_rtc(
    check: ArtifactCheck,
    ckpt: LoadedCheckpoint,
    backend: CoreHandle,
    *,
    steps: int,
    delay: int,
    rtol: float,
    seed: int,
) -> None:
    """``RealtimeClient(rtc=True)`` in virtual time vs LeRobot's RTC engine (:mod:`policy_export.rtc_rollout`)."""
    from policy_export.rtc_rollout import run_rtc_rollout

    trace = run_rtc_rollout(ckpt, backend, steps=steps, delay_steps=delay, seed=seed, image_format=check.image_format)
    scale = ckpt.action_scale
    stats, robot = gated_compare(trace.reference, trace.candidate, check.atol, rtol, check.tolerance_space, scale)
    if trace.reference_requests != trace.candidate_requests:
        stats.passed = False
        check.reason = (
            f"delay {delay}: the client asked for chunks at steps {trace.candidate_requests}, "
            f"LeRobot's RTC engine at {trace.reference_requests}"
        )
    check.results.append(
        RolloutResult(
            batch_size=1,
            samples=steps,
            stats=stats,
            infer_ms_median=0.0,
            robot_units=robot,
            resets=[0],
            per_step_max_abs=_per_step_max_abs(trace.reference, trace.candidate, check.tolerance_space, scale, steps),
            lerobot_chunk_calls=len(trace.reference_requests),
            client_core_calls=len(trace.candidate_requests),
            dims=per_dim_errors(trace.reference, trace.candidate, _std(ckpt)),
            tolerance_std=check.tolerance_std,
        )
    )
    if not check.results[-1].passed:
        check.status = Status.FAILED
