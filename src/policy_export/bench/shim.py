"""Per-step cost of the host-side action shim alone (no network, no observation handling).

The shim runs on the robot's host at every control step, so its cost adds straight onto the
control loop's latency. It is measured here with a ``predict`` that hands back a ready chunk,
so what is timed is only the bookkeeping: popping the queue (plus the occasional refill) or
folding a chunk into the running ensemble. LeRobot's own torch bookkeeping
(``deque`` + ``ACTTemporalEnsembler``) is timed the same way for comparison when lerobot is
importable. Each step is timed on its own (``perf_counter_ns``), so the median and p90 are
per-step figures, not an average hiding the refill steps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from policy_export.percentile import percentile
from policy_export.runtime.shim import ShimSettings

if TYPE_CHECKING:
    from rich.table import Table

SCHEMA = 1


@dataclass(frozen=True)
class ShimBenchConfig:
    chunk_size: int = 100
    action_dim: int = 14
    batch_sizes: tuple[int, ...] = (1, 16)
    #: Queue lengths to time (100 = ACT's default n_action_steps = chunk_size).
    queue_steps: tuple[int, ...] = (100, 10)
    ensemble_coeff: float = 0.01
    steps: int = 5000
    seed: int = 0
    lerobot: bool = True


def _time_steps(step: Callable[[], object], warmup: int, steps: int) -> np.ndarray:
    for _ in range(warmup):
        step()
    out = np.empty(steps, np.int64)
    clock = time.perf_counter_ns
    for i in range(steps):
        t0 = clock()
        step()
        out[i] = clock() - t0
    return out


def _row(impl: str, mode: str, batch: int, ns: np.ndarray) -> dict[str, Any]:
    us = ns / 1e3
    return {
        "impl": impl,
        "mode": mode,
        "batch": batch,
        "steps": len(us),
        "median_us": percentile(us, 50),
        "p90_us": percentile(us, 90),
        "p99_us": percentile(us, 99),
        "mean_us": float(us.mean()),
    }


def _modes(cfg: ShimBenchConfig) -> list[tuple[str, ShimSettings]]:
    modes = [(f"queue n={n}", ShimSettings(cfg.chunk_size, n)) for n in cfg.queue_steps]
    modes.append((f"ensemble c={cfg.ensemble_coeff:g}", ShimSettings(cfg.chunk_size, 1, cfg.ensemble_coeff)))
    return modes


def _ours(settings: ShimSettings, chunk: np.ndarray) -> Callable[[], object]:
    shim = settings.make()
    batch = len(chunk)

    def predict(rows: np.ndarray) -> np.ndarray:
        return chunk if len(rows) == batch else chunk[rows]

    return lambda: shim.step(predict, batch)


def _lerobot(settings: ShimSettings, chunk: np.ndarray) -> Callable[[], object]:
    """What ``ACTPolicy.select_action`` does around ``predict_action_chunk``, in torch."""
    import torch
    from lerobot.policies.act.modeling_act import ACTTemporalEnsembler

    actions = torch.from_numpy(chunk)
    if settings.temporal_ensemble_coeff is not None:
        ensembler = ACTTemporalEnsembler(settings.temporal_ensemble_coeff, settings.chunk_size)
        return lambda: ensembler.update(actions)
    n = settings.n_action_steps
    queue: deque = deque(maxlen=n)

    def step() -> object:
        if len(queue) == 0:
            queue.extend(actions[:, :n].transpose(0, 1))
        return queue.popleft()

    return step


def run_shim_bench(cfg: ShimBenchConfig, progress: Callable[[], None] | None = None) -> dict[str, Any]:
    """Time every (implementation, mode, batch size); return the JSON-ready report."""
    from policy_export.bench.machine import machine_info

    impls: list[tuple[str, Callable[[ShimSettings, np.ndarray], Callable[[], object]]]] = [
        ("policy_export (numpy)", _ours)
    ]
    skipped = None
    if cfg.lerobot:
        try:
            import lerobot.policies.act.modeling_act  # noqa: F401

            impls.append(("lerobot (torch)", _lerobot))
        except ImportError as exc:
            skipped = f"lerobot reference not timed: {exc}"
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for batch in cfg.batch_sizes:
        chunk = rng.normal(size=(batch, cfg.chunk_size, cfg.action_dim)).astype(np.float32)
        for mode, settings in _modes(cfg):
            for impl, make in impls:
                ns = _time_steps(make(settings, chunk), warmup=2 * cfg.chunk_size, steps=cfg.steps)
                rows.append(_row(impl, mode, batch, ns))
                if progress is not None:
                    progress()
    threads = None
    if any(i[0].startswith("lerobot") for i in impls):
        import torch

        threads = torch.get_num_threads()
    return {
        "schema": SCHEMA,
        "benchmark": "shim-overhead",
        "config": asdict(cfg),
        "torch_threads": threads,
        "note": skipped,
        "machine": machine_info(),
        "rows": rows,
    }


def render_table(report: dict[str, Any]) -> Table:
    from rich.table import Table

    cfg = report["config"]
    table = Table(
        title=f"Action shim overhead per control step (chunk {cfg['chunk_size']} x action {cfg['action_dim']}, "
        f"{cfg['steps']} steps each; core excluded)",
        title_justify="left",
    )
    for col in ("implementation", "mode", "batch", "median µs", "p90 µs", "p99 µs", "mean µs"):
        table.add_column(col, justify="left" if col in ("implementation", "mode") else "right")
    for r in report["rows"]:
        table.add_row(
            r["impl"],
            r["mode"],
            str(r["batch"]),
            f"{r['median_us']:.2f}",
            f"{r['p90_us']:.2f}",
            f"{r['p99_us']:.2f}",
            f"{r['mean_us']:.2f}",
        )
    return table
