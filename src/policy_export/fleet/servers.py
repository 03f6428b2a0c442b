"""The Triton side of the fleet benchmark: the servers it starts (one variant repository per
batching setting) or is pointed at (``--triton-url`` replicas, checked to serve one model), and the
statistics it reads from them around each run.

Apart from :mod:`policy_export.fleet.bench` because this is everything that talks to a server
other than the robots themselves: tritonclient and the server launcher are imported here
only, lazily, and the run's orchestration reads the figures without knowing where they come from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy_export.errors import BadInputError, PolicyExportError

if TYPE_CHECKING:
    from policy_export.triton.server import TritonServer


# -- Triton statistics ---------------------------------------------------------------------
def _stats_client(url: str) -> Any:  # tritonclient.grpc.InferenceServerClient (untyped)
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url)


COUNTERS = ("success", "executions", "inferences", "queue_ns", "compute_ns", "exec_compute_ns")


def server_counters(urls: tuple[str, ...], model: str, timeout_s: float) -> dict[str, dict[str, float]]:
    """Cumulative counters of ``model`` (all versions) per replica that answers.

    ``compute_ns`` is Triton's per-request sum (a request in a batch of 4 is charged the whole
    execution); ``exec_compute_ns`` sums ``batch_stats`` per execution, which is what the
    server's instance was actually busy for.
    """
    out: dict[str, dict[str, float]] = {}
    for url in urls:
        client = _stats_client(url)
        try:
            stats = client.get_inference_statistics(model, as_json=True, client_timeout=timeout_s)
        except Exception:  # a replica that is down (the failover drill) has no figures
            continue
        finally:
            client.close()
        total = dict.fromkeys(COUNTERS, 0.0)
        for s in stats.get("model_stats", []):
            inf = s.get("inference_stats", {})

            def ns(block: dict[str, Any], key: str) -> float:
                return float(block.get(key, {}).get("ns", 0))

            total["success"] += float(inf.get("success", {}).get("count", 0))
            total["executions"] += float(s.get("execution_count", 0))
            total["inferences"] += float(s.get("inference_count", 0))
            total["queue_ns"] += ns(inf, "queue")
            total["compute_ns"] += sum(ns(inf, k) for k in ("compute_input", "compute_infer", "compute_output"))
            for b in s.get("batch_stats", []):
                total["exec_compute_ns"] += sum(ns(b, k) for k in ("compute_input", "compute_infer", "compute_output"))
        out[url] = total
    return out


def counter_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> tuple[dict[str, float], list[str]]:
    """Summed per-replica differences, over the replicas that answered both times (and those)."""
    both = [u for u in before if u in after]
    delta = {k: sum(after[u][k] - before[u][k] for u in both) for k in COUNTERS}
    return delta, both


# -- servers -------------------------------------------------------------------------------
def model_dir(repo: Path, model: str) -> Path:
    path = repo / model
    if not (path / "config.pbtxt").is_file():
        names = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file()) if repo.is_dir() else []
        where = f"models there: {', '.join(names)}" if names else "no models there"
        raise BadInputError(f"{repo}: no model {model!r} in the repository ({where}); pick one with --model")
    return path


def variant_repo(repo: Path, model: str, batching: bool, dest: Path) -> Path:
    """A repository serving only ``model``, with dynamic batching on or off; version folders are
    symlinked, so nothing large is copied and the served files are the user's."""
    from google.protobuf import text_format

    from policy_export.triton.validate import parse_config

    src = model_dir(repo, model)
    cfg = parse_config(src / "config.pbtxt")
    if batching and not cfg.HasField("dynamic_batching"):
        if cfg.max_batch_size < 2:
            raise BadInputError(f"{src}: max_batch_size {cfg.max_batch_size} leaves nothing to batch")
        cfg.dynamic_batching.SetInParent()
    if not batching:
        cfg.ClearField("dynamic_batching")
    out = dest / ("batching-on" if batching else "batching-off") / model
    out.mkdir(parents=True)
    (out / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    for entry in src.iterdir():
        if entry.name != "config.pbtxt":
            (out / entry.name).symlink_to(entry.resolve())
    return out.parent


@contextlib.contextmanager
def started_server(repo: Path, venv: Path | None) -> Iterator[TritonServer]:
    """A server for one run; stopped and its folder removed on any exit (signals included)."""
    from policy_export.signals import signals_as_interrupt
    from policy_export.triton.install import find_server
    from policy_export.triton.server import TritonServer

    server = TritonServer(repo=repo, install=find_server(venv))
    try:
        with signals_as_interrupt(), server:
            yield server
    finally:
        server.stop()
        server.cleanup()


def repo_tokenizer(repo: Path, model: str) -> Path | None:
    """A language model's tokenizer as ``triton-repo`` copies it (``<model file>.tokenizer.json`` in the
    newest version folder); None when the model has none."""
    versions = sorted((p for p in (repo / model).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    found = sorted(versions[-1].glob("*.tokenizer.json")) if versions else []
    return found[0] if found else None


def check_replicas(urls: tuple[str, ...], model: str, timeout_s: float, tokenizer: Path | None = None) -> str:
    """Every ``--triton-url`` answers with the same ``model`` before any robot starts: one line otherwise.

    Returns the model's identity, which every robot then holds every replica to: a replica
    serving something else under the same name is refused, never run.
    """
    from policy_export.fleet.robot import identity
    from policy_export.runtime import PolicyClient

    seen: dict[str, str] = {}
    for url in urls:
        try:
            with PolicyClient.from_triton(url, model, timeout_s=timeout_s, tokenizer=tokenizer) as client:
                seen[url] = identity(client.backend)
        except BadInputError as exc:
            if tokenizer is None and "tokenizer" in str(exc):  # a language model, no tokenizer given
                raise BadInputError(
                    f"--triton-url {url}: model {model!r} tokenizes its task on the robot; pass --tokenizer "
                    "<the .tokenizer.json beside the exported artifact or in its repository version folder>"
                ) from None
            raise type(exc)(f"--triton-url {url}: {exc}") from None
        except PolicyExportError as exc:
            raise type(exc)(f"--triton-url {url}: {exc}") from None
    if len(set(seen.values())) > 1:
        first = urls[0]
        other = next(u for u in urls if seen[u] != seen[first])
        raise BadInputError(
            f"--triton-url {other} serves a different {model!r} than {first} ({seen[other]} vs {seen[first]}); "
            "replicas must serve the same model"
        )
    return seen[urls[0]]


def served_batching(url: str, model: str, timeout_s: float) -> bool | None:
    """Whether the model on ``url`` has dynamic batching (None when the config is unreadable)."""
    client = _stats_client(url)
    try:
        cfg = client.get_model_config(model, as_json=True, client_timeout=timeout_s)
        return "dynamic_batching" in cfg.get("config", cfg)
    except Exception:
        return None
    finally:
        client.close()
