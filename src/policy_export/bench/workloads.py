"""What a benchmark worker times: LeRobot eager, an exported artifact, or a matmul probe of the machine.

Each workload loads once (its import and load time measured from a clean process) and then
runs on the feed the parent sent; :mod:`policy_export.bench.worker` does the timing around
``infer`` and the message loop.
"""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from policy_export.checkpoint import LoadedCheckpoint
    from policy_export.runners import Runner


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)  # eager runs ops one after another; ORT gets inter_op=1 too
    except RuntimeError:
        pass  # already set once in this process


class Workload:
    """What the worker needs from a backend: load once, then run on the current feed."""

    def load(self) -> dict[str, Any]:
        raise NotImplementedError

    def infer(self, feed: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release sessions before the process exits."""


class EagerWorkload(Workload):
    """LeRobot's own inference: preprocessor -> predict_action_chunk -> postprocessor."""

    def __init__(self, checkpoint: str, threads: int) -> None:
        self.checkpoint = checkpoint
        self.threads = threads
        self.ckpt: LoadedCheckpoint | None = None

    def load(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        _set_torch_threads(self.threads)
        import lerobot.policies.factory  # noqa: F401  (import cost reported apart from load)

        from policy_export.checkpoint import load_checkpoint
        from policy_export.inputs import state_distribution
        from policy_export.versions import library_versions

        t1 = time.perf_counter()
        self.ckpt = load_checkpoint(self.checkpoint)
        load_s = time.perf_counter() - t1
        spec = self.ckpt.spec
        center, scale = state_distribution(self.ckpt.input_stats, spec.state_key, spec.state_dim)
        versions = library_versions()
        return {
            "import_s": t1 - t0,
            "load_s": load_s,
            "runtime": f"lerobot {versions.get('lerobot', '?')} / torch {versions.get('torch', '?')}",
            "kind": "eager",
            "precision": "fp32",
            "image_format": "float32",
            "spec": spec.to_dict(),
            "state_center": np.asarray(center, np.float32),
            "state_scale": np.asarray(scale, np.float32),
        }

    def flops(self) -> dict[str, Any]:
        """Matmul/conv flops of the stateless core, per sample (what every backend computes)."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from policy_export.core import build_core
        from policy_export.inputs import random_inputs

        assert self.ckpt is not None, "load first"
        core = build_core(self.ckpt)
        feed = random_inputs(self.ckpt.spec, 1, np.random.default_rng(0))
        args = [torch.from_numpy(feed[n]) for n in self.ckpt.spec.input_names]
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            core(*args)
        by_module = {
            name.removeprefix(f"{type(core).__name__}."): float(sum(ops.values()))
            for name, ops in counter.get_flop_counts().items()
            if name.count(".") == 1
        }
        by_op = {str(op): float(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
        return {"per_sample": float(counter.get_total_flops()), "by_module": by_module, "by_op": by_op}

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        from policy_export.families import eager_chunk

        assert self.ckpt is not None, "load first"
        return eager_chunk(self.ckpt, feed)


class ArtifactWorkload(Workload):
    """An exported file through whatever runner ``open_runner`` picks for it."""

    def __init__(self, artifact: str, provider: str, threads: int) -> None:
        self.artifact = artifact
        self.provider = provider
        self.threads = threads
        self.runner: Runner | None = None

    def load(self) -> dict[str, Any]:
        from policy_export.errors import UnavailableError
        from policy_export.runners import open_runner

        t0 = time.perf_counter()
        try:
            runner = open_runner(self.artifact, ort_provider=self.provider, threads=self.threads)
            if runner.info.kind == "torchscript":
                _set_torch_threads(self.threads)
            t1 = time.perf_counter()
            runner.activate()
        except (ImportError, OSError) as exc:  # a runner or runtime library not installed here
            raise UnavailableError(f"cannot run {self.artifact} here: {type(exc).__name__}: {exc}") from exc
        wall = time.perf_counter() - t1
        self.runner = runner
        meta = runner.info.metadata
        return {
            "import_s": t1 - t0,
            "load_s": runner.load_seconds or wall,
            "runtime": runner.name,
            "kind": runner.info.kind,
            "precision": meta.precision,
            "image_format": meta.image_format,
        }

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        assert self.runner is not None, "load first"
        return self.runner.infer(feed)["action_chunk"]

    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()


class MatmulProbe(Workload):
    """Sustained float32 matrix-multiply rate of one library: the machine's practical ceiling.

    ONNX Runtime's right-hand matrix is a constant, as model weights are, so MLAS packs it
    once at load exactly as it does for the policy's layers; torch gets plain tensors, as
    its eager layers do.
    """

    def __init__(self, library: str, sizes: list[int], threads: int) -> None:
        self.library = library
        self.sizes = sizes
        self.threads = threads
        self.fns: dict[int, Any] = {}

    def load(self) -> dict[str, Any]:
        rng = np.random.default_rng(0)
        if self.library == "torch":
            _set_torch_threads(self.threads)
            import torch

            for n in self.sizes:
                a, b = (torch.from_numpy(rng.random((n, n), dtype=np.float32)) for _ in range(2))
                self.fns[n] = lambda a=a, b=b: torch.mm(a, b)
            runtime = f"torch {torch.__version__} (torch.mm)"
        elif self.library == "onnxruntime":
            import onnxruntime as ort

            for n in self.sizes:
                sess = ort.InferenceSession(
                    _matmul_model(n, rng), _probe_session_options(ort, self.threads), providers=["CPUExecutionProvider"]
                )
                feed = {"a": rng.random((n, n), dtype=np.float32)}
                self.fns[n] = lambda sess=sess, feed=feed: sess.run(None, feed)
            runtime = f"onnxruntime {ort.__version__} (MatMul, MLAS)"
        else:
            raise ValueError(f"unknown matmul library {self.library!r}")
        return {"import_s": 0.0, "load_s": 0.0, "runtime": runtime, "kind": "matmul"}

    def measure(self, size: int, seconds: float, min_calls: int = 5) -> dict[str, Any]:
        fn = self.fns[size]
        flop = 2.0 * size**3
        for _ in range(2):
            fn()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_calls or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "library": self.library,
            "size": size,
            "calls": len(times),
            "seconds": sum(times),
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "gflops_median": flop / float(np.median(times)) / 1e9,
            "gflops_best": flop / min(times) / 1e9,
        }


def _matmul_model(n: int, rng: np.random.Generator) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(rng.random((n, n), dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _probe_session_options(ort: Any, threads: int) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return so


def make_workload(request: dict[str, Any], threads: int) -> Workload:
    kind = request["backend"]
    if kind == "eager":
        return EagerWorkload(request["checkpoint"], threads)
    if kind == "artifact":
        return ArtifactWorkload(request["artifact"], request.get("provider", "cpu"), threads)
    if kind == "matmul":
        return MatmulProbe(request["library"], [int(n) for n in request["sizes"]], threads)
    raise ValueError(f"unknown workload request {request!r}")
