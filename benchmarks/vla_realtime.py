"""BENCHMARKS.md's real-time chunking figures on a real SmolVLA core (issue 20 part 5).

Builds a small SmolVLA offline (``demo_smolvla.TINY_SMOLVLA`` with LeRobot's default chunk of 50
and execution horizon 10; random weights), exports its core to ONNX as the SmolVLA family does
(one graph: VLM prefix once, the Euler loop as an ONNX Loop, RTC guidance in closed form), and
runs bench-realtime's own virtual-time comparison (:func:`policy_export.bench.realtime.compare_merges`)
on it: the same toy robot, observations and task, every chunk computed by ONNX Runtime, every
chunk taking the same simulated latency, merged by RTC, replace and ensemble. Then the highest
control rate with 0 fallback ticks for a chunk latency (:func:`fallback_free_fps`), for this
model's measured LeRobot-eager and ONNX Runtime latencies and for the latencies given on the
command line (e.g. the default configuration's, measured by ``benchmarks/smolvla.py``).

    python benchmarks/vla_realtime.py --out reports/vla_realtime.json [--latency-ms 100 500 800]
        [--extra-latency eager-default=2700 ort-default=1100]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def smooth_targets(state: np.ndarray, chunk: int, action_dim: int, goal_map: np.ndarray) -> np.ndarray:
    """The synthetic task the policy is trained on: from the state's first joints, a smooth
    exponential approach (time constant 15 steps) to a goal that depends on the whole state
    (``tanh(goal_map @ state)``). ``[B, chunk, action_dim]`` in robot units."""
    start = state[:, :action_dim]
    goal = np.tanh(state @ goal_map.T)
    ramp = 1.0 - np.exp(-np.arange(1, chunk + 1, dtype=np.float32) / 15.0)
    return (start[:, None, :] + (goal - start)[:, None, :] * ramp[None, :, None]).astype(np.float32)


def train(policy: Any, pre: Any, cams: list[str], steps: int, batch: int, lr: float, seed: int) -> list[float]:
    """Train ``policy`` in place for ``steps`` steps on :func:`smooth_targets`, with LeRobot's own loss
    (``SmolVLAPolicy.forward``, flow matching) and its optimizer preset (AdamW; ``lr`` overrides the
    preset's learning rate: a toy model from scratch, minutes of CPU). Returns the loss per step.

    Why: with random weights a SmolVLA's chunks are noise (each step as large as any boundary), so no
    merge can be told from another by its boundary jump; a policy that has learnt smooth chunks can."""
    import torch

    from policy_export.bench.realtime import DEFAULT_TASK

    pc = policy.config
    rng = np.random.default_rng(seed)
    sd, ad = pc.robot_state_feature.shape[0], pc.action_feature.shape[0]
    goal_map = rng.normal(0.0, 0.8, (ad, sd)).astype(np.float32)
    preset = pc.get_optimizer_preset()
    preset.lr = lr
    optimizer = preset.build([p for p in policy.parameters() if p.requires_grad])
    policy.train()
    losses = []
    for _ in range(steps):
        state = rng.uniform(-1.0, 1.0, (batch, sd)).astype(np.float32)
        obs: dict[str, Any] = {"observation.state": torch.from_numpy(state)}
        for key in cams:
            shape = pc.image_features[key].shape
            obs[key] = torch.from_numpy(rng.uniform(0, 1, (batch, *shape)).astype(np.float32))
        obs["action"] = torch.from_numpy(smooth_targets(state, pc.chunk_size, ad, goal_map))
        obs["task"] = [DEFAULT_TASK] * batch
        loss, _ = policy.forward(pre(obs))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), pc.optimizer_grad_clip_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
    policy.eval()
    return losses


def build(tmp: Path, train_steps: int = 0, num_steps: int | None = None, lr: float = 1e-3) -> dict[str, Any]:
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies import get_policy_class, make_pre_post_processors

    from policy_export.checkpoint.normalization import _find_step, _stats_as_numpy
    from policy_export.demo_smolvla import TINY_SMOLVLA, build_smolvla_checkpoint
    from policy_export.families.smolvla_tables import build_core
    from policy_export_wrappers.act import FeatureNormalizer
    from policy_export_wrappers.smolvla import script_for_export

    recipe = replace(
        TINY_SMOLVLA,
        chunk_size=50,
        n_action_steps=50,
        rtc={"execution_horizon": 10, "max_guidance_weight": 10.0, "prefix_attention_schedule": "LINEAR"},
    )
    if num_steps is not None:
        recipe = replace(recipe, num_steps=num_steps)
    root = build_smolvla_checkpoint(tmp / "pretrained_model", recipe)
    cfg = PreTrainedConfig.from_pretrained(str(root))
    with contextlib.redirect_stdout(io.StringIO()):
        policy = get_policy_class(cfg.type).from_pretrained(str(root), config=cfg)
    pre, post = make_pre_post_processors(
        policy.config, pretrained_path=str(root), preprocessor_overrides={"device_processor": {"device": "cpu"}}
    )
    losses = train(policy, pre, list(policy.config.image_features), train_steps, 16, lr, 0) if train_steps else []
    in_stats = _stats_as_numpy(_find_step(pre, "NormalizerProcessorStep"))
    out_stats = _stats_as_numpy(_find_step(post, "UnnormalizerProcessorStep"))

    def norm(key: str, stats: dict, mode: str, inverse: bool) -> FeatureNormalizer:
        tensors = {k: torch.from_numpy(v) for k, v in stats[key].items()} if mode != "IDENTITY" else None
        return FeatureNormalizer(mode, tensors, inverse=inverse)

    pc = policy.config
    cams = list(pc.image_features)
    shapes = [tuple(pc.image_features[k].shape) for k in cams]
    core = build_core(
        policy,
        camera_shapes=shapes,
        state_normalizer=norm("observation.state", in_stats, "MEAN_STD", False),
        image_normalizers=[norm(k, in_stats, "IDENTITY", False) for k in cams],
        action_normalizer=norm("action", out_stats, "MEAN_STD", False),
        action_unnormalizer=norm("action", out_stats, "MEAN_STD", True),
    )
    cam_names = [f"image_{k.rsplit('.', 1)[-1]}" for k in cams]
    names = ["state", *cam_names, "lang_tokens", "lang_mask", "noise", "rtc_prev_chunk", "rtc_prev_len", "rtc_delay"]
    rng = np.random.default_rng(0)
    batch, chunk, adim = 2, pc.chunk_size, pc.action_feature.shape[0]
    obs = {
        "observation.state": torch.from_numpy(
            rng.normal(0, 1, (batch, pc.robot_state_feature.shape[0])).astype(np.float32)
        )
    }
    obs.update(
        {
            k: torch.from_numpy(rng.uniform(0, 1, (batch, *s)).astype(np.float32))
            for k, s in zip(cams, shapes, strict=True)
        }
    )
    obs["task"] = ["pick up the red cube", "open the drawer"]
    b = pre(obs)
    zeros = torch.zeros(batch, dtype=torch.long)
    args = (
        obs["observation.state"],
        *[obs[k] for k in cams],
        b["observation.language.tokens"],
        b["observation.language.attention_mask"],
        torch.from_numpy(rng.normal(0, 1, (batch, chunk, pc.max_action_dim)).astype(np.float32)),
        torch.zeros(batch, chunk, adim),
        zeros,
        zeros.clone(),
    )
    onnx_path = tmp / "smolvla_small.onnx"
    axes = {n: {0: "batch"} for n in [*names, "action_chunk"]}
    axes["lang_tokens"] = axes["lang_mask"] = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        traced = torch.jit.trace(script_for_export(core, args), args, check_trace=False)
        torch.onnx.export(
            traced, args, str(onnx_path), dynamo=False, opset_version=20, input_names=names,
            output_names=["action_chunk"], dynamic_axes=axes,
        )  # fmt: skip
    return {
        "policy": policy,
        "pre": pre,
        "post": post,
        "onnx": onnx_path,
        "cams": cams,
        "cam_names": cam_names,
        "losses": losses,
    }


def metadata(built: dict[str, Any], tokenizer_fields: dict[str, Any]) -> Any:
    """The SmolVLA family's declaration for this core (state, cameras, task tokens, noise, RTC inputs)."""
    from policy_export.spec import (
        ACTION_DIM,
        BATCH,
        CHUNK,
        STATE_DIM,
        ArtifactMetadata,
        CameraSpec,
        HostDecl,
        PolicySpec,
        Role,
        Signature,
        TensorDecl,
        action_chunk_output,
        observation_inputs,
    )

    pc = built["policy"].config
    cams = tuple(
        CameraSpec(k, n, tuple(pc.image_features[k].shape))
        for k, n in zip(built["cams"], built["cam_names"], strict=True)
    )
    sd, ad = pc.robot_state_feature.shape[0], pc.action_feature.shape[0]
    inputs = (
        *observation_inputs(sd, cams, "observation.state"),
        TensorDecl("lang_tokens", Role.LANG_TOKENS, (BATCH, "L"), dtype="int64"),
        TensorDecl("lang_mask", Role.LANG_MASK, (BATCH, "L"), dtype="bool"),
        TensorDecl("noise", Role.NOISE, (BATCH, CHUNK, "max_action_dim")),
        TensorDecl("rtc_prev_chunk", Role.RTC_PREV_CHUNK, (BATCH, CHUNK, ACTION_DIM), units="robot"),
        TensorDecl("rtc_prev_len", Role.RTC_PREV_LEN, (BATCH,), dtype="int64"),
        TensorDecl("rtc_delay", Role.RTC_DELAY, (BATCH,), dtype="int64"),
    )
    dims = {STATE_DIM: sd, ACTION_DIM: ad, CHUNK: pc.chunk_size, "L": pc.tokenizer_max_length,
            "max_action_dim": pc.max_action_dim}  # fmt: skip
    spec = PolicySpec(
        "smolvla", "observation.state", sd, "action", ad, cams, pc.chunk_size, pc.n_action_steps, {}, "bench",
        Signature(inputs, (action_chunk_output(),), dims),
        HostDecl(tokenizer=tokenizer_fields, rtc={"execution_horizon": pc.rtc_config.execution_horizon}),
    )  # fmt: skip
    return ArtifactMetadata(spec=spec, artifact_kind="onnx")


class OrtCore:
    """The exported core in ONNX Runtime (2 threads), with this benchmark's metadata."""

    name, where = "onnxruntime", "smolvla_small.onnx"

    def __init__(self, path: Path, meta: Any) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.metadata = meta
        self.ms: list[float] = []

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.session.run(None, {k: feed[k] for k in (i.name for i in self.session.get_inputs())})[0]
        self.ms.append((time.perf_counter() - t0) * 1e3)
        return np.asarray(out, np.float32)

    def reconnect(self) -> None:
        return None

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/vla_realtime.json"))
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--latency-ms", type=float, nargs="*", default=[100.0, 500.0, 800.0])
    ap.add_argument("--extra-latency", nargs="*", default=[], help="name=ms: more latencies for the fallback-free rate")
    ap.add_argument("--timing-calls", type=int, default=5)
    ap.add_argument("--rollout-delays", type=int, nargs="*", default=[0, 5])
    ap.add_argument("--rollout-steps", type=int, default=120)
    ap.add_argument(
        "--train-steps", type=int, default=0, help="train on a smooth synthetic task first (0: random weights)"
    )
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--num-steps", type=int, default=None, help="flow steps (default: the tiny recipe's 3)")
    args = ap.parse_args(argv)

    import torch

    from policy_export.bench.realtime import DEFAULT_TASK, compare_merges, fallback_free_fps
    from policy_export.language import load_vlm_tokenizer, tokenizer_fields, write_tokenizer_json
    from policy_export.runtime import PolicyClient
    from policy_export.runtime.realtime import Merge
    from policy_export.runtime.tokenizer import TaskTokenizer, TokenizerSettings

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        built = build(tmp, args.train_steps, args.num_steps, args.lr)
        build_s = time.perf_counter() - t0
        pc = built["policy"].config
        tok = load_vlm_tokenizer(pc.vlm_model_name)
        sha = write_tokenizer_json(tok, tmp / "smolvla_small.onnx.tokenizer.json")
        fields = tokenizer_fields(pc, tok, None, sha256=sha)
        tokenizer = TaskTokenizer.from_file(
            tmp / "smolvla_small.onnx.tokenizer.json", TokenizerSettings.from_dict(fields)
        )
        core = OrtCore(built["onnx"], metadata(built, fields))

        # Chunk latency of this model: LeRobot eager vs ONNX Runtime, same inputs, this run.
        client = PolicyClient(core, tokenizer=tokenizer, seed=0)  # type: ignore[arg-type]
        from policy_export.bench.realtime import ToyRobot

        robot = ToyRobot(core.metadata.spec, 0, DEFAULT_TASK)
        obs = robot.observe()
        chunk = client.predict_chunk(obs)
        core.ms.clear()
        for _ in range(args.timing_calls):
            client.predict_chunk(obs)
        ort_ms = float(np.median(core.ms))
        lerobot_obs = {"observation.state": torch.from_numpy(obs["observation.state"][None])}
        for key in built["cams"]:
            frame = obs[key]
            lerobot_obs[key] = torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1)[None]
        lerobot_obs["task"] = [DEFAULT_TASK]
        eager = []
        with torch.inference_mode():
            for _ in range(args.timing_calls + 1):
                t1 = time.perf_counter()
                batch = built["pre"](dict(lerobot_obs))
                built["post"](built["policy"].predict_action_chunk(batch))
                eager.append((time.perf_counter() - t1) * 1e3)
        eager_ms = float(np.median(eager[1:]))

        merges = {}
        for latency in args.latency_ms:
            merges[f"{latency:g}"] = compare_merges(
                core,
                args.fps,
                args.steps,
                latency / 1e3,
                0,
                task=DEFAULT_TASK,
                tokenizer=tokenizer,  # type: ignore[arg-type]
            )
        latencies = {"eager (this model)": eager_ms, "onnxruntime (this model)": ort_ms}
        for item in args.extra_latency:
            name, ms = item.split("=")
            latencies[name] = float(ms)
        # The robot's RTC loop on this real core against LeRobot's RTC engine around the same policy.
        from types import SimpleNamespace

        from policy_export.checkpoint.normalization import _find_step, _stats_as_numpy
        from policy_export.rtc_rollout import run_rtc_rollout

        ckpt = SimpleNamespace(
            policy=built["policy"],
            preprocessor=built["pre"],
            postprocessor=built["post"],
            spec=core.metadata.spec,
            input_stats=_stats_as_numpy(_find_step(built["pre"], "NormalizerProcessorStep")),
        )
        rollouts = {}
        for delay in args.rollout_delays:
            trace = run_rtc_rollout(
                ckpt,
                core,
                steps=args.rollout_steps,
                delay_steps=delay,
                seed=0,
                tokenizer=tokenizer,  # type: ignore[arg-type]
            )
            rollouts[str(delay)] = {
                "steps": args.rollout_steps,
                "max_abs": float(np.nanmax(np.abs(trace.reference - trace.candidate))),
                "requests_lerobot": trace.reference_requests,
                "requests_client": trace.candidate_requests,
                "fallback_ticks": trace.fallback_ticks,
            }
        max_fps = {
            name: {
                "latency_ms": ms,
                "fps": fallback_free_fps(
                    core, Merge.RTC, ms / 1e3, chunk=chunk, task=DEFAULT_TASK, tokenizer=tokenizer
                ),  # type: ignore[arg-type]
            }
            for name, ms in latencies.items()
        }
    report = {
        "model": {
            "recipe": "TINY_SMOLVLA with chunk 50, execution horizon 10"
            + (
                f", trained {args.train_steps} steps (batch 16, lr {args.lr:g}) on smooth synthetic chunks"
                if args.train_steps
                else " (random weights)"
            ),
            "train_loss_first_last": [built["losses"][:5], built["losses"][-5:]] if built["losses"] else None,
            "chunk_size": pc.chunk_size,
            "num_steps": pc.num_steps,
            "build_and_export_s": build_s,
        },
        "fps": args.fps,
        "steps": args.steps,
        "chunk_ms": {"lerobot_eager": eager_ms, "onnxruntime": ort_ms},
        "merges_by_latency_ms": merges,
        "max_fps_rtc": max_fps,
        "rtc_rollout_vs_lerobot_engine": rollouts,
        "machine": {
            "load": os.getloadavg(),
            "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
