"""``policy-export eval``: eager and every artifact, episode by episode, on the same seeds.

Each episode is run once by LeRobot's eager policy, once by eager with its observations moved
one float32 ulp (the chaos baseline: how soon contact dynamics turn rounding into a different
trajectory), and once per artifact (and per simulated latency, for the realtime client).
Every run is compared with eager step by step in the policy's normalized action space.

The gate (exit 1), for an fp32 artifact run synchronously or realtime at K = 0: in some episode
its actions left the tolerance before the chaos baseline's came within :data:`CHAOS_MARGIN` of
it (or the baseline never did), or neither diverged and the outcome (success, episode length,
return) differs. Reduced-precision
artifacts get :data:`BANDS` instead. Realtime runs at K > 0 are reported, never gated: their
trajectories differ by design.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from policy_export.action_space import ActionScale
from policy_export.artifacts import check_compatible, inspect_artifact
from policy_export.checkpoint import LoadedCheckpoint
from policy_export.enums import Precision
from policy_export.errors import BadInputError
from policy_export.runtime.tokenizer import SIDECAR_SUFFIX
from policy_export.sim.envs import MAX_EPISODES, check_features, make_sim
from policy_export.sim.episodes import ClientPolicy, EagerPolicy, Episode, env_task, run_episode

#: fp32 actions within this of eager, in the policy's normalized action space (as ``verify``'s default).
DEFAULT_TOLERANCE = 1e-4
#: Two returns are the same outcome when they differ by at most this, relative to the larger (or 1e-9 absolute).
RETURN_RTOL = 1e-4
#: Reduced-precision artifacts (metadata precision != fp32): over the N episodes, the success rate within
#: ``success_rate`` (absolute) of eager's, and the mean return within ``mean_return_rel`` of eager's
#: (relative to |eager's mean return|, at least ``mean_return_abs``).
BANDS = {"success_rate": 0.10, "mean_return_rel": 0.10, "mean_return_abs": 1e-6}
#: The chaos baseline is one draw of a chaotic process, and so is the artifact: a difference of ~1e-6 per
#: chunk (float32 rounding, on both sides) grows through the contact dynamics until it crosses the tolerance,
#: at a step that varies by a chunk or more from draw to draw (aloha ACT: the artifact at step 30, the baseline
#: at 40, both from 1e-6 per chunk). So the artifact is held to the step where the baseline came within this
#: factor of the tolerance (one decade): with exponential growth that is a fixed time shift, which an export
#: error of the baseline's size never uses up, while one a decade larger (or an O(1) bug) leaves the tolerance
#: before the baseline reaches tolerance / CHAOS_MARGIN.
CHAOS_MARGIN = 10.0
#: Latencies (control steps) the realtime client's table covers by default.
DEFAULT_LATENCIES = (0, 1, 3, 10)


@dataclass
class EvalSettings:
    env: str
    episodes: int
    seed: int = 0
    steps: int = 300
    task: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    #: None: the synchronous PolicyClient; a list: RealtimeClient at each latency (control steps).
    latency_steps: list[int] | None = None
    #: RealtimeClient's merge (None: its default); "rtc" for a model with RTC inputs.
    merge: str | None = None
    chaos: bool = True
    video_dir: Path | None = None
    threads: int = 1
    #: --client triton: each artifact is run by this server (host:port) as the model named here, in
    #: --artifact order; the artifact file says what the served model must be.
    triton_url: str | None = None
    triton_models: list[str] = field(default_factory=list)


@dataclass
class EpisodeRow:
    """One runner in one episode, compared with eager's run of the same episode."""

    runner: str
    episode: int
    seed: int
    total_return: float
    success: bool
    steps: int
    #: Over the steps both ran: max and mean of the per-step largest difference, normalized and robot units.
    max_diff: float = 0.0
    mean_diff: float = 0.0
    max_diff_robot: float = 0.0
    mean_diff_robot: float = 0.0
    #: First step whose action is beyond the tolerance (normalized), None: never.
    first_divergence: int | None = None
    #: First step beyond tolerance / CHAOS_MARGIN: what an artifact is held to, on the chaos baseline's row.
    first_within_margin: int | None = None
    same_outcome: bool = True
    artifact: str = ""
    precision: str = ""
    latency_steps: int | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: The per-step largest difference (normalized), 3 significant digits: any gate can be re-run from the report.
    per_step: list[float] = field(default_factory=list)


def _first(mask: np.ndarray) -> int | None:
    hit = np.flatnonzero(mask)
    return int(hit[0]) if hit.size else None


def compare_episode(eager: Episode, other: Episode, scale: ActionScale, tolerance: float) -> EpisodeRow:
    """``other`` against eager's run of the same episode, over the steps both took."""
    n = min(eager.steps, other.steps)
    robot = np.abs(other.actions[:n].astype(np.float64) - eager.actions[:n]).max(axis=1)
    norm = np.abs(scale.normalize(other.actions[:n]) - scale.normalize(eager.actions[:n])).max(axis=1)
    same = (
        other.success == eager.success
        and other.steps == eager.steps
        and abs(other.total_return - eager.total_return)
        <= max(RETURN_RTOL * max(abs(other.total_return), abs(eager.total_return)), 1e-9)
    )
    return EpisodeRow(
        runner=other.runner,
        episode=other.episode,
        seed=other.seed,
        total_return=other.total_return,
        success=other.success,
        steps=other.steps,
        max_diff=float(norm.max()) if n else 0.0,
        mean_diff=float(norm.mean()) if n else 0.0,
        max_diff_robot=float(robot.max()) if n else 0.0,
        mean_diff_robot=float(robot.mean()) if n else 0.0,
        first_divergence=_first(~(norm <= tolerance)),  # NaN counts as beyond
        first_within_margin=_first(~(norm <= tolerance / CHAOS_MARGIN)),
        same_outcome=same,
        extra=dict(other.extra),
        per_step=[float(f"{x:.3g}") for x in norm],
    )


def diverged_sooner(row: EpisodeRow, baseline: EpisodeRow | None) -> bool:
    """Did ``row`` leave the tolerance before float32 rounding alone (the chaos baseline) came within
    :data:`CHAOS_MARGIN` of it?"""
    if row.first_divergence is None:
        return False
    if baseline is None or baseline.first_within_margin is None:
        return True
    return row.first_divergence < baseline.first_within_margin


@dataclass
class RunnerVerdict:
    runner: str
    artifact: str
    precision: str
    latency_steps: int | None
    gated: bool
    passed: bool
    reason: str
    success_rate: float
    mean_return: float


def verdicts(rows: list[EpisodeRow], episodes: int) -> list[RunnerVerdict]:
    """Per runner: the fp32 gate, the reduced-precision band, or report-only (eager and K > 0)."""
    eager = {r.episode: r for r in rows if r.runner == "eager"}
    chaos = {r.episode: r for r in rows if r.runner == "eager+1ulp"}
    e_sr = float(np.mean([r.success for r in eager.values()])) if eager else 0.0
    e_ret = float(np.mean([r.total_return for r in eager.values()])) if eager else 0.0
    out = []
    for runner in dict.fromkeys(r.runner for r in rows):
        mine = [r for r in rows if r.runner == runner]
        first = mine[0]
        sr = float(np.mean([r.success for r in mine]))
        ret = float(np.mean([r.total_return for r in mine]))
        verdict = RunnerVerdict(runner, first.artifact, first.precision, first.latency_steps, False, True, "", sr, ret)
        out.append(verdict)
        if not first.artifact or (first.latency_steps or 0) > 0:
            verdict.reason = "reported, not gated"
            continue
        verdict.gated = True
        if first.precision == Precision.FP32:
            bad = [
                r
                for r in mine
                if diverged_sooner(r, chaos.get(r.episode)) or (r.first_divergence is None and not r.same_outcome)
            ]
            if bad:
                r = bad[0]
                verdict.passed = False
                verdict.reason = (
                    f"episode {r.episode} (seed {r.seed}): "
                    + (
                        f"actions beyond tolerance from step {r.first_divergence}"
                        + (
                            f", before the chaos baseline came within {CHAOS_MARGIN:g}x of it "
                            f"(step {chaos[r.episode].first_within_margin})"
                            if r.episode in chaos and chaos[r.episode].first_within_margin is not None
                            else f" (the chaos baseline never came within {CHAOS_MARGIN:g}x of it)"
                        )
                        if r.first_divergence is not None
                        else "a different outcome with no action beyond tolerance"
                    )
                    + (f"; {len(bad)} of {len(mine)} episodes" if len(bad) > 1 else "")
                )
            else:
                verdict.reason = (
                    f"fp32: left the tolerance no earlier than the chaos baseline came within {CHAOS_MARGIN:g}x "
                    "of it, same outcomes where neither diverged"
                )
        else:
            sr_ok = abs(sr - e_sr) <= BANDS["success_rate"] + 1e-12
            margin = max(BANDS["mean_return_rel"] * abs(e_ret), BANDS["mean_return_abs"])
            ret_ok = abs(ret - e_ret) <= margin
            verdict.passed = sr_ok and ret_ok
            verdict.reason = (
                f"{first.precision} band over {episodes} episodes: success rate {sr:.2f} vs eager {e_sr:.2f} "
                f"(margin {BANDS['success_rate']:.2f}), mean return {ret:.4g} vs {e_ret:.4g} (margin {margin:.3g})"
            )
    return out


@dataclass
class EvalResult:
    settings: EvalSettings
    checkpoint: str
    rows: list[EpisodeRow]
    verdicts: list[RunnerVerdict]
    action_scale: dict[str, object]
    fps: float
    videos: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(v.gated and not v.passed for v in self.verdicts) else 0


def evaluate(
    ckpt: LoadedCheckpoint,
    artifacts: list[Path],
    settings: EvalSettings,
    *,
    backend_for: Callable[[Path], object] | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalResult:
    """Run every episode on every side and compare (see the module's docstring for the gate)."""
    if not 1 <= settings.episodes <= MAX_EPISODES:
        raise BadInputError(f"--episodes {settings.episodes}: use 1 to {MAX_EPISODES}")
    if not settings.tolerance >= 0:
        raise BadInputError(f"--tolerance {settings.tolerance}: give a non-negative number")
    for k in settings.latency_steps or []:
        if not 0 <= k <= settings.steps:
            raise BadInputError(f"--latency-steps {k}: use 0 to --steps ({settings.steps}) control steps")
    if settings.triton_url is not None and len(settings.triton_models) != len(artifacts):
        raise BadInputError(
            f"--client triton: give one --triton-model per --artifact ({len(artifacts)} artifacts, "
            f"{len(settings.triton_models)} models), in the same order"
        )
    import torch

    torch.set_num_threads(settings.threads)
    infos = [inspect_artifact(Path(a)) for a in artifacts]  # bad files fail before any slow work
    for info in infos:
        check_compatible(info, ckpt.spec, ckpt.path)
    from policy_export.rollout import check_settings

    for info in infos:
        check_settings(info, ckpt)
    if settings.triton_url is not None and backend_for is None:
        served = dict(zip((i.path for i in infos), settings.triton_models, strict=True))
        backend_for = _triton_backends(settings.triton_url, served)
    sim = make_sim(settings.env, steps=settings.steps, task=settings.task, policy_config=ckpt.policy.config)
    sides: list[ClientPolicy] = []
    try:
        check_features(sim, ckpt.spec, str(ckpt.path))
        scale = ckpt.action_scale
        eager = EagerPolicy(ckpt, sim, settings.seed)
        chaos = EagerPolicy(ckpt, sim, settings.seed, perturb_seed=settings.seed + 1) if settings.chaos else None
        from policy_export.runtime.backends import LocalCore

        names = _runner_names(infos)
        task = env_task(sim.env)[0] if ckpt.spec.host.tokenizer else None  # what the eager side's observation has
        labels: dict[int, tuple[str, str, int | None]] = {}
        for info, name in zip(infos, names, strict=True):
            backend = LocalCore(info.path, threads=settings.threads) if backend_for is None else backend_for(info.path)
            latencies: list[int | None] = list(settings.latency_steps) if settings.latency_steps is not None else [None]
            for lat in latencies:
                label = name if lat is None else f"{name} realtime K={lat}"
                tokenizer = info.path.with_name(info.path.name + SIDECAR_SUFFIX) if task is not None else None
                client = ClientPolicy(
                    label,
                    backend,  # type: ignore[arg-type]
                    sim.fps,
                    settings.seed,
                    lat,
                    task,
                    tokenizer,
                    settings.merge,
                )
                labels[id(client)] = (str(info.path), info.metadata.precision, lat)
                sides.append(client)
        rows: list[EpisodeRow] = []
        videos: list[str] = []
        record = settings.video_dir is not None
        for i in range(settings.episodes):
            seed = settings.seed + i
            if progress:
                progress(f"episode {i + 1}/{settings.episodes}: eager")
            ref = run_episode(sim, eager, i, seed, record=record)
            rows.append(compare_episode(ref, ref, scale, settings.tolerance))
            if chaos is not None:
                rows.append(compare_episode(ref, run_episode(sim, chaos, i, seed), scale, settings.tolerance))
            for side in sides:
                if progress:
                    progress(f"episode {i + 1}/{settings.episodes}: {side.name}")
                ep = run_episode(sim, side, i, seed, record=record)
                row = compare_episode(ref, ep, scale, settings.tolerance)
                row.artifact, row.precision, row.latency_steps = labels[id(side)]
                rows.append(row)
                if record and settings.video_dir is not None:
                    from policy_export.sim.video import side_by_side

                    videos.append(str(side_by_side(settings.video_dir, ref, ep)))
        return EvalResult(
            settings, str(ckpt.path), rows, verdicts(rows, settings.episodes), scale.to_dict(), sim.fps, videos
        )
    finally:
        closed: set[int] = set()
        for side in sides:
            if id(side.backend) not in closed:
                closed.add(id(side.backend))
                side.close()
        sim.close()


def _triton_backends(url: str, served: dict[Path, str]) -> Callable[[Path], object]:
    """A connection per artifact to the model serving it, refused (one line) when the server's model is
    another policy than the file: eval compares eager with what is served, so the two must be one."""

    def connect(path: Path) -> object:
        from policy_export.runtime.triton import TritonCore

        want = inspect_artifact(path).metadata
        core = TritonCore.connect(url, served[path])
        got = core.metadata
        if got.spec.norm_hash != want.spec.norm_hash or got.spec.input_names != want.spec.input_names:
            core.close()
            raise BadInputError(
                f"--triton-model {served[path]} on {url} is not {path.name}: it serves another policy "
                f"(normalization {got.spec.norm_hash[:12]} vs {want.spec.norm_hash[:12]}); serve that file, or "
                "pass the model that serves it"
            )
        if got.precision != want.precision:
            core.close()
            raise BadInputError(
                f"--triton-model {served[path]} on {url} is {got.precision}, {path.name} is {want.precision}: "
                "pass the model version that serves this file"
            )
        return core

    return connect


def _runner_names(infos: list) -> list[str]:
    """File names, or paths where two artifacts share a name."""
    names = [i.path.name for i in infos]
    return [str(i.path) if names.count(n) > 1 else n for i, n in zip(infos, names, strict=True)]


def closed_loop_gate(
    ckpt: LoadedCheckpoint, env: str, episodes: int, steps: int, seed: int = 0, threads: int = 1
) -> Callable[[Path], tuple[bool, dict[str, object]]]:
    """``quantize --env``: the band check of ``eval`` on one staged reduced-precision artifact, as a
    callable (quantization does not import the simulators). Settings and the simulator's package are
    checked now, before any slow quantization work; the episodes run when the gate is called."""
    from policy_export.sim.envs import MAX_STEPS, env_entry

    if not 1 <= episodes <= MAX_EPISODES:
        raise BadInputError(f"--episodes {episodes}: use 1 to {MAX_EPISODES}")
    if not 1 <= steps <= MAX_STEPS:
        raise BadInputError(f"--steps {steps}: use 1 to {MAX_STEPS}")
    env_entry(env)  # unknown or not installed: one line naming the extra
    sim = make_sim(env, steps=steps, policy_config=ckpt.policy.config)
    try:
        check_features(sim, ckpt.spec, str(ckpt.path))  # a policy for another robot: refused before quantizing
    finally:
        sim.close()
    settings = EvalSettings(env=env, episodes=episodes, seed=seed, steps=steps, chaos=False, threads=threads)

    def gate(artifact: Path) -> tuple[bool, dict[str, object]]:
        result = evaluate(ckpt, [artifact], settings)
        mine = next(v for v in result.verdicts if v.gated)
        eager = next(v for v in result.verdicts if v.runner == "eager")
        figures: dict[str, object] = {
            "env": env,
            "episodes": episodes,
            "steps": steps,
            "seed": seed,
            "success_rate": mine.success_rate,
            "mean_return": mine.mean_return,
            "eager_success_rate": eager.success_rate,
            "eager_mean_return": eager.mean_return,
            "band": dict(BANDS),
            "passed": mine.passed,
            "reason": mine.reason,
            "returns": [r.total_return for r in result.rows if r.runner == mine.runner],
            "eager_returns": [r.total_return for r in result.rows if r.runner == "eager"],
        }
        return mine.passed, figures

    return gate
