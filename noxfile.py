"""Nox sessions. Each one installs what it needs into its own virtualenv.

nox -s tests      # layers (lint-imports), types (mypy) and the unit/integration suite (same as `make test`)
nox -s lint       # ruff
nox -s parity     # export + verify a checkpoint; fails the build on a parity regression
nox -s gpu        # TensorRT + onnxruntime-gpu tests (pytest -m gpu) on an NVIDIA GPU host
nox -s triton     # the Triton repository + real-server tests, with the server's own venv (numpy < 2)
nox -s bench_shim # per-step overhead of the host-side action shim (reports/bench-shim.json)
nox -s bench      # BENCHMARKS.md: demo policy, every CPU backend vs LeRobot eager (reports/bench/)
nox -s bench_lowp # BENCHMARKS.md "CPU beyond fp32": int8/bf16 of the demo policy, verify + bench (reports/lowp/)
nox -s fleet      # BENCHMARKS.md fleet section: perf_analyzer + bench-fleet on real servers (reports/fleet/)
nox -s eval_chaos # BENCHMARKS.md closed-loop section: pusht eval, chaos baseline, realtime vs latency (reports/eval/)
nox -s pusht_trained # BENCHMARKS.md "A trained PushT ACT": scripted expert -> dataset -> lerobot-train -> eval (~30 min)
nox -s eval_aloha # BENCHMARKS.md aloha rows: ACT and Diffusion, 300 steps (~10 min each; needs `make sim-system-deps`)
nox -s heavy      # the tests marked heavy (over make test's memory budget)
nox -s robot_host # README's robot-host install from the package index, then a RealtimeClient loop (ARTIFACT=x.onnx)
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"
PYTHON = "3.12"


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.12,<0.18")
    session.run("ruff", "check", "src", "wrappers", "tests", "examples", "noxfile.py")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev,bench,gpu,triton,sim,cpu-lowp]")
    session.run("lint-imports")
    session.run("mypy")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def parity(session: nox.Session) -> None:
    """Export ONNX from CHECKPOINT (env; default: the built-in demo) and gate on parity.

    Writes reports/parity.json and reports/parity.xml for the CI system to publish.
    """
    session.install("-e", ".")
    out = "reports"
    os.makedirs(out, exist_ok=True)
    checkpoint = os.environ.get("CHECKPOINT")
    if not checkpoint:
        checkpoint = f"{out}/demo-checkpoint"
        session.run(
            "python", "-c", f"from policy_export.demo import build_checkpoint; build_checkpoint({checkpoint!r})"
        )
    tolerance = os.environ.get("PARITY_TOLERANCE", "1e-4")
    session.run("policy-export", "onnx", "--checkpoint", checkpoint, "--output", f"{out}/policy.onnx", "--force")
    session.run(
        "policy-export",
        "verify",
        "--checkpoint",
        checkpoint,
        "--artifact",
        f"{out}/policy.onnx",
        "--tolerance",
        tolerance,
        "--batch-sizes",
        "1,4",
        "--report",
        f"{out}/parity.json",
        "--junit",
        f"{out}/parity.xml",
    )


@nox.session(python=PYTHON)
def triton(session: nox.Session) -> None:
    """Triton repository tests against a real tritonserver (the nvidia-pytriton wheel, CPU).

    The server needs numpy < 2 and lerobot needs numpy >= 2, so the server gets a second
    virtualenv beside this session's, built from requirements-triton-server.txt.
    """
    session.install("-e", ".[dev,triton]")
    server_venv = os.path.join(os.path.dirname(session.virtualenv.location), "triton-server")
    if not os.path.exists(os.path.join(server_venv, "bin", "python")):
        session.run("python", "-m", "venv", server_venv)
    session.run(
        os.path.join(server_venv, "bin", "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "-r",
        "requirements-triton-server.txt",
        external=True,
    )
    session.run(
        "pytest",
        "tests/test_triton_repo.py",
        "tests/test_triton_server.py",
        *session.posargs,
        env={"POLICY_EXPORT_TRITON_VENV": server_venv, "CI": "1"},
    )


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """TensorRT and ONNX Runtime CUDA tests (``pytest -m gpu``) on an NVIDIA GPU host.

    onnxruntime-gpu replaces the CPU wheel: both provide the ``onnxruntime`` module and must
    never be installed together. Polygraphy's auto-install stays off: what runs is what is pinned here.
    Bounds are what the code targets; they were not run here (no GPU on the dev/CI machines).
    """
    session.env["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"
    # triton too: `pytest -m gpu` still imports every test module, and the Triton ones import tritonclient.
    session.install("-e", ".[dev,gpu,triton]")
    session.run("python", "-m", "pip", "uninstall", "--yes", "onnxruntime")
    session.install("onnxruntime-gpu>=1.22,<1.33", "tensorrt>=10.0,<11")
    session.run("pytest", "-m", "gpu", "-rs", *session.posargs)


@nox.session(python=PYTHON)
def bench_shim(session: nox.Session) -> None:
    """Per-step cost of the action queue / temporal ensembling alone; args after -- go to the command."""
    session.install("-e", ".")
    os.makedirs("reports", exist_ok=True)
    session.run("policy-export", "bench-shim", "--json", "reports/bench-shim.json", *session.posargs)


REALTIME_DIR = "reports/realtime"
#: BENCHMARKS.md's real-time rows: the demo policy (an action queue) and the same size with ensembling.
REALTIME_POLICIES = {
    "demo": "CheckpointRecipe()",
    "ensemble": "CheckpointRecipe(n_action_steps=1, temporal_ensemble_coeff=0.01)",
}


@nox.session(python=PYTHON)
def bench_realtime(session: nox.Session) -> None:
    """Reproduce BENCHMARKS.md's real-time client rows: a simulated robot at 30 Hz for 3000 steps, the
    synchronous PolicyClient vs RealtimeClient, on the demo policy and on an ensembling one.

    Writes reports/realtime/<policy>.json. Run it on an otherwise idle machine. Args after -- go to
    both bench-realtime runs (e.g. -- --steps 30 for a quick check of the recipe).
    """
    session.install("-e", ".")
    for name, recipe in REALTIME_POLICIES.items():
        checkpoint = f"{REALTIME_DIR}/{name}-checkpoint"
        build = f"from policy_export.demo import CheckpointRecipe, build_checkpoint; build_checkpoint({checkpoint!r}, {recipe})"
        session.run("python", "-c", build)
        artifact = f"{REALTIME_DIR}/act_{name}.onnx"
        session.run("policy-export", "onnx", "--checkpoint", checkpoint, "--force", "--output", artifact)
        bench = ["--artifact", artifact, "--fps", "30", "--steps", "3000", "--json", f"{REALTIME_DIR}/{name}.json"]
        session.run("policy-export", "bench-realtime", *bench, *session.posargs)


@nox.session(python=PYTHON)
def vla_realtime(session: nox.Session) -> None:
    """Reproduce BENCHMARKS.md's real-time chunking rows on a real (small) SmolVLA core: the jump where
    chunks meet with rtc / replace / ensemble at one simulated latency, the highest control rate with
    0 fallback ticks per chunk latency, and the robot's RTC loop against LeRobot's RTC engine.

    Writes reports/vla_realtime.json. Args after -- go to benchmarks/vla_realtime.py (e.g.
    -- --extra-latency eager-default=2700 for the default configuration's eager chunk latency).
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/vla_realtime.py", "--out", "reports/vla_realtime.json", *session.posargs)


@nox.session(python=PYTHON)
def vla_rtc_trained(session: nox.Session) -> None:
    """The same comparison on a small SmolVLA first trained on CPU (LeRobot's own flow-matching loss and
    optimizer preset) to emit smooth chunks: with random weights every chunk is noise and no merge's
    boundary jump can be told from another's. Writes reports/vla_rtc_trained.json (minutes on 2 cores).
    """
    session.install("-e", ".")
    args = ["--out", "reports/vla_rtc_trained.json", "--train-steps", "400", "--rollout-delays"]
    session.run("python", "benchmarks/vla_realtime.py", *args, *session.posargs)


@nox.session(python=PYTHON)
def bench_diffusion(session: nox.Session) -> None:
    """Reproduce BENCHMARKS.md's Diffusion Policy rows: LeRobot's default Diffusion Policy (DDPM, 100
    steps, 96x96 cropped to 84x84), LeRobot eager vs ONNX Runtime per chunk at batch 1 and 8, with
    export time and file size. Writes reports/diffusion/. Run it on an otherwise idle machine; args
    after -- go to benchmarks/diffusion.py (e.g. -- --tiny --iterations 2 to check the recipe).
    """
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/diffusion.py", "--out", "reports/diffusion", *session.posargs)


@nox.session(python=PYTHON)
def heavy(session: nox.Session) -> None:
    """The tests marked `heavy`, left out of `make test` for memory or time (LeRobot's default Diffusion Policy
    exported and verified: ~8.9 GB peak, minutes on 2 cores; pi0's parity and the pi rollout; the aloha renderer
    check, which skips here without the `sim-aloha` extra: `nox -s eval_aloha` runs it), and for make test's
    15-minute budget on a 2-core AVX2 machine (where the default run took 14 min of pytest) the slowest tests
    whose promise another default test also covers: the console script in a subprocess (the wheel test runs
    it too), two of the three extra ACT configurations, bench's skipped-backend and mismatched-artifact runs,
    the sync replica kill, bench-fleet's tiny run and sweep, the ensembling bench-realtime run, TorchScript
    on a full disk and serve under SIGHUP (SIGTERM's path)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "heavy", *session.posargs)


@nox.session(python=PYTHON)
def pi05_300m(session: nox.Session) -> None:
    """pi0.5 gemma_300m + gemma_300m at real size (1.9B parameters stored, built offline with random
    weights): LeRobot eager per chunk at batch 1, ONNX export (weights as external data; time and peak
    memory), ONNX Runtime per chunk on the same inputs and parity with and without RTC. Writes
    reports/pi05/ (measured: peak 15.45 GiB, ~8 min on 2 cores). Run under `flock /tmp/bigmem.lock` on an otherwise idle machine with ~17 GB free
    (a watchdog stops it above --max-rss-gb, default 20). Args after -- go to benchmarks/pi05.py.
    """
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/pi05.py", "--out", "reports/pi05", *session.posargs)


@nox.session(python=PYTHON)
def smolvla_default(session: nox.Session) -> None:
    """LeRobot's default SmolVLA (450M parameters, built offline with random weights): export it to ONNX
    (time and peak memory), verify it against LeRobot at batch 1 and 4 (fp32, 1e-4), and bench LeRobot
    eager vs ONNX Runtime per chunk at batch 1. Writes reports/smolvla/. Needs about 10 GB of memory;
    run it on an otherwise idle machine. Args after -- go to benchmarks/smolvla.py (e.g. -- --tiny).
    """
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/smolvla.py", "--out", "reports/smolvla", *session.posargs)


@nox.session(python=PYTHON)
def smolvla_speed(session: nox.Session) -> None:
    """The default SmolVLA per chunk at batch 1 in one bench run: LeRobot eager, fp32 ONNX Runtime and
    its OpenVINO bf16 artifact from `policy-export quantize`, judged by verify per action dimension
    against the action std. Reuses reports/smolvla/ from `nox -s smolvla_default` when there. ~8 GB
    (quantize holds fp32 ORT and OpenVINO at once); run it on an otherwise idle machine. ONNX Runtime
    int8 (`-- --lowp bf16,int8`) needs far more memory for its calibration at this size.
    """
    session.install("-e", ".[bench,cpu-lowp]")
    args = ["--out", "reports/smolvla", "--lowp", "bf16", "--reuse", "--verify-batch-sizes", "1"]
    session.run("python", "benchmarks/smolvla.py", *args, *session.posargs)


@nox.session(python=PYTHON)
def export_memory(session: nox.Session) -> None:
    """Where an ONNX export's memory goes, phase by phase (the kernel's high-water mark per phase), for a
    checkpoint: -- --checkpoint DIR --output /tmp/x.onnx --json reports/export-memory.json."""
    session.install("-e", ".")
    session.run("python", "benchmarks/export_memory.py", *session.posargs)


BENCH_DIR = "reports/bench"


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Reproduce BENCHMARKS.md: the demo policy (1 camera 3x480x640, 8-dim state, chunk 100)
    exported to ONNX fp32, ONNX fp16 and TorchScript, timed against LeRobot eager at batch 1 and 8.

    Writes reports/bench/bench.json and bench.png. Run it on an otherwise idle machine: the
    JSON records how much CPU other processes took while timing. Args after -- go to bench.
    """
    session.install("-e", ".[bench]")
    out = BENCH_DIR
    checkpoint = f"{out}/demo-checkpoint"
    session.run("python", "-c", f"from policy_export.demo import build_checkpoint; build_checkpoint({checkpoint!r})")
    export = ["--checkpoint", checkpoint, "--force", "--output"]
    session.run("policy-export", "onnx", *export, f"{out}/act_demo.onnx")
    session.run("policy-export", "onnx", *export, f"{out}/act_demo_fp16.onnx", "--precision", "fp16")
    session.run("policy-export", "torchscript", *export, f"{out}/act_demo.pt")
    session.run(
        "policy-export",
        "bench",
        "--checkpoint",
        checkpoint,
        "--artifact",
        f"{out}/act_demo.onnx",
        "--artifact",
        f"{out}/act_demo_fp16.onnx",
        "--artifact",
        f"{out}/act_demo.pt",
        "--batch-sizes",
        "1,8",
        "--iterations",
        "20",
        "--warmup",
        "3",
        "--json",
        f"{out}/bench.json",
        "--plot",
        f"{out}/bench.png",
        "--force",  # this session owns reports/bench: a plot from before plots were marked as ours is replaced too
        *session.posargs,
    )


LOWP_DIR = "reports/lowp"


@nox.session(python=PYTHON)
def bench_lowp(session: nox.Session) -> None:
    """BENCHMARKS.md "CPU beyond fp32": the demo policy (ACT, 3x480x640, chunk 100) quantized to int8 with ONNX
    Runtime (QDQ) and with OpenVINO/NNCF, and bf16 through OpenVINO; verify (per action dimension, vs LeRobot
    eager) then bench (every artifact interleaved in one run, batch 1).

    FAMILY=diffusion does the same for Diffusion Policy at LeRobot's default configuration (heavy: the export
    peaked at 8.4 GB RSS, run it under `flock /tmp/bigmem.lock`; export ~90 s and fp32 ~4 s per chunk quiet).
    Writes reports/lowp/<family>/{verify,bench}.json.
    """
    session.install("-e", ".[bench,cpu-lowp]")
    family = os.environ.get("FAMILY", "act")
    out = f"{LOWP_DIR}/{family}"
    ckpt = f"{out}/checkpoint"
    builder = "build_diffusion_checkpoint" if family == "diffusion" else "build_checkpoint"
    session.run("python", "-c", f"from policy_export.demo import {builder}; {builder}({ckpt!r})")
    fp32 = f"{out}/fp32.onnx"
    session.run("policy-export", "onnx", "--checkpoint", ckpt, "--output", fp32, "--force")
    artifacts = [fp32]
    for precision, runtime, name in (
        ("int8", "onnxruntime", "int8.onnx"),
        ("int8", "openvino", "int8.xml"),
        ("bf16", "openvino", "bf16.xml"),
    ):
        if family == "diffusion" and precision == "int8":
            continue  # see BENCHMARKS.md: bf16 is what halves the U-Net's streamed weights
        artifacts.append(f"{out}/{name}")
        quantize = ["--checkpoint", ckpt, "--artifact", fp32, "--precision", precision, "--runtime", runtime]
        session.run("policy-export", "quantize", *quantize, "--output", artifacts[-1], "--force", success_codes=[0, 1])
    each = [a for path in artifacts for a in ("--artifact", path)]
    session.run(
        "policy-export",
        "verify",
        "--checkpoint",
        ckpt,
        *each,
        "--batch-sizes",
        "1",
        "--samples",
        "2",
        "--report",
        f"{out}/verify.json",
        "--force",
        success_codes=[0, 1],
    )
    session.run(
        "policy-export",
        "bench",
        "--checkpoint",
        ckpt,
        *each,
        "--batch-sizes",
        "1",
        "--iterations",
        os.environ.get("ITERATIONS", "20"),
        "--warmup",
        "3",
        "--json",
        f"{out}/bench.json",
        "--force",
        *session.posargs,
    )


PERF_TOOLS = ".perf-tools"


@nox.session(python=PYTHON)
def fleet(session: nox.Session) -> None:
    """Reproduce BENCHMARKS.md's fleet section: Triton's perf_analyzer and bench-fleet on the same servers.

    Installs perf_analyzer the way that works on Debian 12 (glibc 2.36; the pip perf-analyzer
    wheels need 2.38): the binary inside tritonclient 2.41's wheel, Debian's libb64-0d (apt,
    as root) and libcudart.so.12 from nvidia-cuda-runtime-cu12, both wheels --no-deps into
    .perf-tools (2.41 pins older numpy/protobuf than the project). The server gets its own venv
    as in the triton session. Writes reports/fleet/. Args after -- go to benchmarks/fleet.py,
    e.g. `nox -s fleet -- --policies small --duration 3 --robots 1,2 --max-concurrency 2`.
    """
    session.install("-e", ".[bench,triton]")
    # --no-venv runs (the project's .venv) reuse the server venv named by POLICY_EXPORT_TRITON_VENV.
    server_venv = os.environ.get("POLICY_EXPORT_TRITON_VENV") or os.path.join(
        os.path.dirname(session.virtualenv.location), "triton-server"
    )
    if not os.path.exists(os.path.join(server_venv, "bin", "python")):
        session.run("python", "-m", "venv", server_venv)
        session.run(
            os.path.join(server_venv, "bin", "python"), "-m", "pip", "install", "--quiet",
            "-r", "requirements-triton-server.txt", external=True,
        )  # fmt: skip
    if not any(os.path.exists(os.path.join(d, "libb64.so.0d")) for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib")):
        session.run("apt-get", "update", external=True)
        session.run("apt-get", "install", "-y", "libb64-0d", external=True)
    if not os.path.exists(os.path.join(PERF_TOOLS, "bin", "perf_analyzer")):
        session.run(
            "python", "-m", "pip", "install", "--quiet", "--no-deps", "--target", PERF_TOOLS,
            "tritonclient==2.41.0", "nvidia-cuda-runtime-cu12>=12,<13",
        )  # fmt: skip
    session.run(
        "python", "benchmarks/fleet.py", "--out", "reports/fleet", *session.posargs,
        env={"POLICY_EXPORT_TRITON_VENV": server_venv, "POLICY_EXPORT_PERF_TOOLS": PERF_TOOLS},
    )  # fmt: skip


@nox.session(python=PYTHON)
def fleet_s3(session: nox.Session) -> None:
    """Object storage and rolling upgrades at full length (BENCHMARKS.md's rolling-upgrade section): every
    SIGKILL point of an S3 publish, racing writers, `serve --repo s3://... --replicas 2` as the user runs it,
    and the v1 -> v2 upgrade under 4 robots at 30 Hz on two
    tritonservers loading from moto_server on loopback, 45 s (FLEET_UPGRADE_DURATION_S), its row written to
    reports/fleet_s3/upgrade.json. The server venv as in the triton session."""
    session.install("-e", ".[dev,triton,s3]")
    server_venv = os.environ.get("POLICY_EXPORT_TRITON_VENV") or os.path.join(
        os.path.dirname(session.virtualenv.location), "triton-server"
    )
    if not os.path.exists(os.path.join(server_venv, "bin", "python")):
        session.run("python", "-m", "venv", server_venv)
        session.run(
            os.path.join(server_venv, "bin", "python"), "-m", "pip", "install", "--quiet",
            "-r", "requirements-triton-server.txt", external=True,
        )  # fmt: skip
    os.makedirs("reports/fleet_s3", exist_ok=True)
    session.run(
        "pytest", "-m", "fleet", "-s", "tests/test_triton_s3.py", "tests/test_fleet_upgrade.py", *session.posargs,
        env={"POLICY_EXPORT_TRITON_VENV": server_venv, "FLEET_UPGRADE_REPORT": "reports/fleet_s3/upgrade.json"},
    )  # fmt: skip


@nox.session(python=PYTHON)
def robot_host(session: nox.Session) -> None:
    """The README's robot-host install done for real from the package index (tests/test_packaging.py does it
    offline, with the test venv's numpy and onnxruntime): numpy + onnxruntime + the wheel with --no-deps,
    then 300 ticks of a RealtimeClient loop on ARTIFACT (env: an ONNX file from `policy-export onnx`)."""
    import glob
    import tempfile

    artifact = os.environ.get("ARTIFACT")
    if not artifact:
        session.error("set ARTIFACT=path/to/policy.onnx (export one with `policy-export onnx`)")
    wheel_dir = tempfile.mkdtemp(prefix="policy-export-wheel-")
    session.run("python", "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheel_dir, ".")
    session.install("numpy", "onnxruntime")
    session.install("--no-deps", *glob.glob(f"{wheel_dir}/policy_export-*.whl"))
    session.run("python", "tests/robot_host_loop.py", os.path.abspath(artifact), "300")


EVAL_DIR = "reports/eval"


@nox.session(python=PYTHON)
def eval_chaos(session: nox.Session) -> None:
    """BENCHMARKS.md's closed-loop section: pusht-shaped ACT and Diffusion (random weights), exported to fp32
    ONNX and TorchScript, against LeRobot eager and the chaos baseline (eager, observations moved one float32
    ulp) over 300-step episodes; then the ACT ONNX through the realtime client at latencies 0, 1, 3, 10 steps.

    Writes reports/eval/pusht-{act,diffusion}.json, pusht-act-realtime.json and .png. Args after -- go to
    every eval run (e.g. -- --episodes 2 --steps 50 for a quick check of the recipe).
    """
    session.install("-e", ".[sim,bench]")
    os.makedirs(EVAL_DIR, exist_ok=True)
    for family in ("act", "diffusion"):
        checkpoint = f"{EVAL_DIR}/pusht-{family}-checkpoint"
        build = f"from policy_export.demo import build_env_checkpoint; build_env_checkpoint({checkpoint!r}, 'pusht', {family!r})"
        session.run("python", "-c", build)
        onnx, pt = f"{EVAL_DIR}/pusht-{family}.onnx", f"{EVAL_DIR}/pusht-{family}.pt"
        session.run("policy-export", "onnx", "--checkpoint", checkpoint, "--output", onnx, "--force")
        session.run("policy-export", "torchscript", "--checkpoint", checkpoint, "--output", pt, "--force")
        run = ["policy-export", "eval", "--checkpoint", checkpoint, "-a", onnx, "-a", pt, "--env", "pusht"]
        session.run(
            *run, "--episodes", "5", "--steps", "300", "--report", f"{EVAL_DIR}/pusht-{family}.json", *session.posargs
        )
    checkpoint, onnx = f"{EVAL_DIR}/pusht-act-checkpoint", f"{EVAL_DIR}/pusht-act.onnx"
    session.run(
        "policy-export", "eval", "--checkpoint", checkpoint, "-a", onnx, "--env", "pusht", "--episodes", "5",
        "--steps", "300", "--client", "realtime", "--latency-steps", "0,1,3,10", "--no-chaos",
        "--report", f"{EVAL_DIR}/pusht-act-realtime.json", "--plot", f"{EVAL_DIR}/pusht-act-realtime.png",
        *session.posargs,
    )  # fmt: skip


TRAINED_DIR = "reports/trained"
#: lerobot-train arguments for the small pusht ACT (CPU, local dataset, no hub, no wandb). The learning rates are
#: 10x ACT's preset: the backbone starts from random weights (nothing can be downloaded) and the budget is minutes.
PUSHT_ACT_TRAIN = (
    "--policy.type=act", "--policy.device=cpu", "--policy.push_to_hub=false",
    "--policy.pretrained_backbone_weights=null", "--policy.dim_model=128", "--policy.dim_feedforward=512",
    "--policy.n_heads=4", "--policy.n_encoder_layers=2", "--policy.n_decoder_layers=1", "--policy.latent_dim=16",
    "--policy.chunk_size=20", "--policy.n_action_steps=10", "--policy.optimizer_lr=1e-4",
    "--policy.optimizer_lr_backbone=1e-4", "--batch_size=8", "--num_workers=0", "--wandb.enable=false",
    "--env_eval_freq=0", "--save_freq=500", "--log_freq=100", "--seed=1000",
)  # fmt: skip


@nox.session(python=PYTHON)
def pusht_trained(session: nox.Session) -> None:
    """BENCHMARKS.md "A trained PushT ACT": a scripted expert (privileged T pose) records a LeRobotDataset through
    LeRobot's env factory, LeRobot's own `lerobot-train` fits a small ACT on CPU, `policy-export onnx` exports it
    and `policy-export eval` runs eager vs the artifact over 20 episodes. Training steps: STEPS (default 500, about
    12 minutes at 1.4 s a step on 2 cores shared with other jobs; one torch thread, because several threads
    spinning on oversubscribed cores ran 4.6x slower). Args after -- go to the eval run.
    """
    session.install("-e", ".[sim,bench]")
    session.env.update({"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    steps = os.environ.get("STEPS", "500")
    root, run = f"{TRAINED_DIR}/dataset", f"{TRAINED_DIR}/train"
    if not os.path.isdir(root):
        session.run("python", "benchmarks/pusht_expert.py", "expert", "--episodes", "20", "--seed", "0",
                    "--json", f"{TRAINED_DIR}/expert-eval-seeds.json")  # fmt: skip
        session.run("python", "benchmarks/pusht_expert.py", "record", "--episodes", "40", "--steps", "150",
                    "--root", root, "--json", f"{TRAINED_DIR}/record.json")  # fmt: skip
    if os.path.isdir(run):  # lerobot-train refuses an existing output_dir unless resuming: this session's own
        shutil.rmtree(run)  # run folder under reports/, never a user's
    session.run("lerobot-train", "--dataset.repo_id=local/pusht_scripted", f"--dataset.root={root}",
                f"--output_dir={run}", f"--steps={steps}", *PUSHT_ACT_TRAIN)  # fmt: skip
    checkpoint = f"{run}/checkpoints/last/pretrained_model"
    onnx = f"{TRAINED_DIR}/pusht-act-trained.onnx"
    session.run("policy-export", "onnx", "--checkpoint", checkpoint, "--output", onnx, "--force")
    session.run(
        "policy-export", "eval", "--checkpoint", checkpoint, "-a", onnx, "--env", "pusht", "--episodes", "20",
        "--steps", "300", "--report", f"{TRAINED_DIR}/eval.json", "--force", *session.posargs,
    )  # fmt: skip


@nox.session(python=PYTHON)
def eval_aloha(session: nox.Session) -> None:
    """BENCHMARKS.md's aloha rows: aloha-shaped ACT and Diffusion (random weights, 14-d, camera `top` 480x640),
    fp32 ONNX and TorchScript against LeRobot eager and the chaos baseline, one 300-step episode each (about
    10 minutes per family on 2 loaded cores: MuJoCo renders in software). Then the aloha test the default run
    leaves out. Needs EGL (or OSMesa) system libraries: `make sim-system-deps`. Args after -- go to every eval run.
    """
    session.install("-e", ".[dev,sim,sim-aloha]")
    os.makedirs(EVAL_DIR, exist_ok=True)
    for family in ("act", "diffusion"):
        checkpoint = f"{EVAL_DIR}/aloha-{family}-checkpoint"
        build = f"from policy_export.demo import build_env_checkpoint; build_env_checkpoint({checkpoint!r}, 'aloha', {family!r})"
        session.run("python", "-c", build)
        onnx, pt = f"{EVAL_DIR}/aloha-{family}.onnx", f"{EVAL_DIR}/aloha-{family}.pt"
        session.run("policy-export", "onnx", "--checkpoint", checkpoint, "--output", onnx, "--force")
        session.run("policy-export", "torchscript", "--checkpoint", checkpoint, "--output", pt, "--force")
        session.run(
            "policy-export", "eval", "--checkpoint", checkpoint, "-a", onnx, "-a", pt, "--env", "aloha",
            "--episodes", "1", "--steps", "300", "--report", f"{EVAL_DIR}/aloha-{family}.json", "--force",
            *session.posargs,
        )  # fmt: skip
    session.run("pytest", "tests/test_eval.py", "-m", "heavy", "-k", "aloha", "-q")
