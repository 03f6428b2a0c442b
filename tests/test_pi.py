"""pi0 and pi0.5 cores, exported to ONNX, against LeRobot's own ``predict_action_chunk``.

Tiny pi0.5 and pi0 checkpoints (LeRobot's classes at test sizes, a local PaliGemma-style
tokenizer, two cameras of different shapes so the centered resize-with-pad really pads) are
built offline and exported once each by ``policy-export onnx``'s code. ONNX Runtime runs them
on fresh random inputs, with prompts tokenized by LeRobot's own preprocessor (pi0.5's carries the
discretized state), against LeRobot's preprocessed batch -> ``predict_action_chunk(batch,
noise=...)`` -> postprocessor, without and with real-time chunking. pi0.5 runs in the default
test run; pi0 (the same core code, its own checkpoint and export) and the rollout check are marked
``heavy`` (``nox -s heavy``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from policy_export.demo_pi import TINY_PI0, TINY_PI05, PiRecipe, build_pi_checkpoint  # noqa: E402

TOL = 1e-4
RECIPES = {"pi05": TINY_PI05, "pi0": TINY_PI0}
TASKS = ["pick up the red cube", "push the t shaped block onto the target", "open the drawer", "wipe"]


@pytest.fixture(scope="module", params=["pi05", pytest.param("pi0", marks=pytest.mark.heavy)])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny checkpoint loaded as every command loads it, and exported by ``policy-export onnx``'s code."""
    import onnxruntime as ort

    from policy_export.checkpoint import load_checkpoint
    from policy_export.export.onnx import export_onnx

    kind = request.param
    recipe = RECIPES[kind]
    root = build_pi_checkpoint(tmp_path_factory.mktemp(kind) / "pretrained_model", recipe)
    ckpt = load_checkpoint(root)
    onnx_path = tmp_path_factory.mktemp(f"{kind}_onnx") / "tiny.onnx"
    result = export_onnx(ckpt, onnx_path)
    assert result.exporter == "legacy" and result.quick_check_max_abs <= TOL
    return {
        "kind": kind,
        "recipe": recipe,
        "ckpt": ckpt,
        "policy": ckpt.policy,
        "pre": ckpt.preprocessor,
        "post": ckpt.postprocessor,
        "onnx": onnx_path,
        "sess": ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]),
        "names": ckpt.spec.input_names,
        "shapes": [tuple(s) for s in recipe.cameras.values()],
    }


def _inputs(tiny: dict[str, Any], batch: int, rng: np.random.Generator) -> dict[str, Any]:
    """Fresh random robot inputs; the prompt tokenized by LeRobot's own preprocessor (pi0.5: with the state)."""
    recipe: PiRecipe = tiny["recipe"]
    cfg = tiny["policy"].config
    state = torch.from_numpy(rng.normal(0, 0.6, (batch, recipe.state_dim)).astype(np.float32))
    images = [torch.from_numpy(rng.uniform(0, 1, (batch, *s)).astype(np.float32)) for s in tiny["shapes"]]
    obs = {"observation.state": state, **dict(zip(cfg.image_features, images, strict=True))}
    obs["task"] = [TASKS[i % len(TASKS)] for i in range(batch)]
    batch_in = tiny["pre"](obs)
    noise = torch.from_numpy(rng.normal(0, 1, (batch, recipe.chunk_size, recipe.max_action_dim)).astype(np.float32))
    prev = torch.from_numpy(rng.normal(0, 1, (batch, recipe.chunk_size, recipe.action_dim)).astype(np.float32))
    zeros = torch.zeros(batch, dtype=torch.long)
    tokens = batch_in["observation.language.tokens"]
    mask = batch_in["observation.language.attention_mask"]
    assert tokens.shape[1] == recipe.tokenizer_max_length and not mask.all(), "prompts must be padded"
    return {
        "batch": batch_in,
        "noise": noise,
        "prev": prev,
        "core": [state, *images, tokens, mask, noise, prev, zeros, zeros.clone()],
    }


def _ort(tiny: dict[str, Any], core_inputs: list) -> np.ndarray:
    return tiny["sess"].run(None, {n: x.numpy() for n, x in zip(tiny["names"], core_inputs, strict=True)})[0]


def _lerobot(tiny: dict[str, Any], batch: dict, noise: Any, **rtc: Any) -> np.ndarray:
    with torch.no_grad():
        chunk = tiny["policy"].predict_action_chunk(dict(batch), noise=noise, **rtc)
        return tiny["post"](chunk).numpy()


def _normalized(tiny: dict[str, Any], prev: Any) -> Any:
    """LeRobot guides with model-space leftovers: the preprocessor's own action normalization (quantiles)."""
    from lerobot.processor import NormalizerProcessorStep

    step = next(s for s in tiny["pre"].steps if isinstance(s, NormalizerProcessorStep))
    return step._normalize_action(prev, inverse=False)


def _rtc_on(tiny: dict[str, Any]) -> None:
    from policy_export.families.smolvla import _enable_rtc

    _enable_rtc(tiny["ckpt"])


def test_the_flow_steps_are_one_onnx_loop_after_the_prefix(tiny: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(tiny["onnx"]))
    loops = [n for n in model.graph.node if n.op_type == "Loop"]
    assert len(loops) == 1, "the Euler steps must be one Loop, not unrolled"
    body = next(a.g for a in loops[0].attribute if a.name == "body")
    assert "Conv" not in {n.op_type for n in body.node}, "SigLIP (the prefix) must not run inside the loop"
    assert [i.name for i in model.graph.input] == tiny["names"]


@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_equals_lerobot_without_rtc(tiny: dict[str, Any], batch: int) -> None:
    data = _inputs(tiny, batch, np.random.default_rng(100 + batch))
    want = _lerobot(tiny, data["batch"], data["noise"])
    got = _ort(tiny, data["core"])
    assert got.shape == want.shape == (batch, tiny["recipe"].chunk_size, tiny["recipe"].action_dim)
    assert np.abs(got - want).max() <= TOL, np.abs(got - want).max()


@pytest.mark.parametrize(("batch", "length", "delay"), [(1, 10, 0), (4, 3, 2)])
def test_onnx_equals_lerobot_with_rtc(tiny: dict[str, Any], batch: int, length: int, delay: int) -> None:
    _rtc_on(tiny)
    data = _inputs(tiny, batch, np.random.default_rng(200 + length))
    prev = data["prev"]
    want = _lerobot(
        tiny,
        data["batch"],
        data["noise"],
        prev_chunk_left_over=_normalized(tiny, prev[:, :length]),
        inference_delay=delay,
    )
    core_in = list(data["core"])
    core_in[-2] = torch.full((batch,), length, dtype=torch.long)
    core_in[-1] = torch.full((batch,), delay, dtype=torch.long)
    got = _ort(tiny, core_in)
    assert np.abs(got - want).max() <= TOL, np.abs(got - want).max()
    unguided = _ort(tiny, data["core"])
    assert np.abs(unguided - want).max() > 100 * TOL, "the guidance must have acted"


def test_the_state_matters_as_lerobot_reads_it(tiny: dict[str, Any]) -> None:
    """pi0 reads the state in the graph; pi0.5 only through the prompt: changing the state input alone
    changes pi0's chunk and leaves pi0.5's unchanged (its tokens, from the preprocessor, carry it)."""
    data = _inputs(tiny, 2, np.random.default_rng(9))
    core_in = list(data["core"])
    base = _ort(tiny, core_in)
    core_in[0] = core_in[0] + 0.5
    moved = np.abs(_ort(tiny, core_in) - base).max()
    if tiny["kind"] == "pi0":
        assert moved > 10 * TOL
    else:
        assert moved == 0.0
        core_in[0] = torch.full_like(core_in[0], float("nan"))  # the kept input is inert, even for NaN
        assert np.isfinite(_ort(tiny, core_in)).all()


def test_verify_passes(tiny: dict[str, Any]) -> None:
    from policy_export.verify import verify_artifacts

    report = verify_artifacts(tiny["ckpt"], [tiny["onnx"]], batch_sizes=[1, 4], samples=1)
    assert report.exit_code == 0
    assert max(r.stats.max_abs for c in report.checks for r in c.results) <= TOL


def test_metadata_declares_the_prompt_and_the_tokenizer_file(tiny: dict[str, Any]) -> None:
    import hashlib

    from policy_export.artifacts import inspect_artifact

    spec = inspect_artifact(tiny["onnx"]).metadata.spec
    assert [str(t.role) for t in spec.signature.inputs][-6:] == [
        "lang_tokens",
        "lang_mask",
        "noise",
        "rtc_prev_chunk",
        "rtc_prev_len",
        "rtc_delay",
    ]
    tok = spec.host.tokenizer
    assert tok is not None and tok["padding"] == "max_length" and tok["length"] == tiny["recipe"].tokenizer_max_length
    sidecar = Path(str(tiny["onnx"]) + ".tokenizer.json")
    assert hashlib.sha256(sidecar.read_bytes()).hexdigest() == tok["sha256"]
    assert spec.family["test_sizes"] is True and spec.family["num_steps"] == tiny["recipe"].num_steps
    if tiny["kind"] == "pi05":
        assert tok["prompt"]["template"] == "Task: {task}, State: {state};\nAction: "
        assert tok["prompt"]["state"]["mode"] == "QUANTILES"
    else:
        assert tok["prompt"] == {"newline": True}


def _edited(src: Path, dst: Path, config: dict[str, object] | None = None, tokenizer_name: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    if tokenizer_name is not None:
        pre = json.loads((dst / "policy_preprocessor.json").read_text())
        for step in pre["steps"]:
            if step["registry_name"] == "tokenizer_processor":
                step["config"]["tokenizer_name"] = tokenizer_name
        (dst / "policy_preprocessor.json").write_text(json.dumps(pre))
    return dst


def test_bad_checkpoints_are_one_line_exit_2(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if tiny["kind"] != "pi05":
        pytest.skip("one family is enough: the declaration is shared")
    from typer.testing import CliRunner

    import policy_export.declarations.pi as pi_declaration
    from policy_export.cli.app import app

    monkeypatch.setattr(pi_declaration, "machine_memory_gib", lambda: 23.5)  # this machine's 24 GB
    src = tiny["ckpt"].path
    real = tmp_path / "real-sizes"
    shutil.copytree(src, real)
    (real / "policy_export_gemma_sizes.json").unlink()  # LeRobot's real gemma_2b + gemma_300m now
    cases = {
        "hub": ({}, "google/paligemma-3b-pt-224", "tokenizer_name"),
        "variant": ({"paligemma_variant": "gemma_7b"}, None, "paligemma_variant"),
        "dtype": ({"dtype": "bfloat16"}, None, "dtype"),
        "relative": ({"use_relative_actions": True}, None, "use_relative_actions"),
    }
    cases["default-size"] = ({}, None, "needs about 33 GiB of memory to export (19 GiB to load")
    cases["projection"] = ({"paligemma_variant": "gemma_300m"}, None, "2048 columns")
    for name, (config, tokenizer, words) in cases.items():
        origin = real if name in ("default-size", "projection") else src
        ckpt = _edited(origin, tmp_path / name, config, tokenizer)
        res = CliRunner().invoke(app, ["inspect", "--checkpoint", str(ckpt)])
        lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
        assert res.exit_code == 2, (name, res.output)
        assert words in " ".join(res.output.split()), (name, res.output)
        assert len(lines) <= 3, (name, res.output)  # one message (rich may wrap it)


def test_the_robot_host_writes_lerobots_prompt(tiny: dict[str, Any]) -> None:
    """The runtime's tokenizer (numpy + tokenizers, from the artifact's metadata and sidecar) makes
    LeRobot's preprocessor's tokens: pi0.5's prompt with the state normalized and binned (states
    beyond the statistics too, whose bins fall outside 0..255 there), pi0's task + newline."""
    from policy_export.artifacts import inspect_artifact
    from policy_export.runtime.tokenizer import TaskTokenizer, TokenizerSettings

    spec = inspect_artifact(tiny["onnx"]).metadata.spec
    tok = TaskTokenizer.for_artifact(tiny["onnx"], TokenizerSettings.from_dict(spec.host.tokenizer))
    rng = np.random.default_rng(3)
    recipe: PiRecipe = tiny["recipe"]
    for scale in (0.3, 3.0):
        state = rng.normal(0, scale, (4, recipe.state_dim)).astype(np.float32)
        tasks = ["pick_up the cube\n", " open the drawer", TASKS[1], "wipe"]
        obs = {"observation.state": torch.from_numpy(state), "task": tasks}
        for key, shape in zip(tiny["policy"].config.image_features, tiny["shapes"], strict=True):
            obs[key] = torch.zeros(4, *shape)
        want = tiny["pre"](obs)
        tokens, mask = tok(tasks, 4, state)
        np.testing.assert_array_equal(tokens[mask], want["observation.language.tokens"].numpy()[mask])
        np.testing.assert_array_equal(mask, want["observation.language.attention_mask"].numpy())


def test_policy_client_equals_lerobots_whole_pipeline(tiny: dict[str, Any]) -> None:
    """PolicyClient (host tokenization + ONNX core) on a raw observation and task = LeRobot's
    preprocessor (its own prompt) -> predict_action_chunk(noise) -> postprocessor."""
    from policy_export.runtime.client import PolicyClient

    recipe: PiRecipe = tiny["recipe"]
    rng = np.random.default_rng(21)
    state = rng.normal(0, 0.5, (2, recipe.state_dim)).astype(np.float32)
    obs: dict[str, Any] = {"observation.state": state}
    for key, shape in zip(tiny["policy"].config.image_features, tiny["shapes"], strict=True):
        obs[key] = rng.uniform(0, 1, (2, *shape)).astype(np.float32)
    noise = rng.normal(0, 1, (2, recipe.chunk_size, recipe.max_action_dim)).astype(np.float32)
    tasks = ["pick up the red cube", "open the drawer"]
    with PolicyClient.from_artifact(tiny["onnx"]) as client:
        client.host.noise_source = lambda rows: {"noise": noise[:rows]}
        got = np.asarray(client.predict_chunk(obs, tasks))
        with pytest.raises(Exception, match="tokenizer_max_length"):
            client.predict_chunk(obs, "wipe the table " * 40)
    lerobot_obs = {k: torch.from_numpy(v) for k, v in obs.items()}
    want = _lerobot(tiny, tiny["pre"]({**lerobot_obs, "task": tasks}), torch.from_numpy(noise))
    assert np.abs(got - want).max() <= TOL, np.abs(got - want).max()


@pytest.mark.heavy  # ~35 s under load: LeRobot's select_action over two episodes
def test_verify_rollout_with_the_host_side(tiny: dict[str, Any]) -> None:
    from policy_export.verify import verify_artifacts

    report = verify_artifacts(tiny["ckpt"], [tiny["onnx"]], batch_sizes=[2], samples=1, rollout_steps=14)
    assert report.exit_code == 0, [(c.status, [r.stats.max_abs for r in c.results]) for c in report.checks]
    rollouts = [c for c in report.checks if c.check.startswith("rollout")]
    assert rollouts and all(str(c.status) == "passed" for c in rollouts), [(c.check, c.status) for c in rollouts]
    assert all(r.lerobot_chunk_calls == r.client_core_calls > 0 for c in rollouts for r in c.results)  # type: ignore[attr-defined]


def test_eval_drives_pusht_with_the_artifact_as_lerobot_does(tmp_path):
    """``policy-export eval --env pusht`` with a VLA: LeRobot's pi0.5 (the env's task in its observation,
    its preprocessor writing the prompt from the state) against the ONNX artifact through the robot
    runtime (the host tokenizing the same task, drawing the same noise), synchronously and through the
    RealtimeClient in simulated time at K = 0 (which must equal the synchronous client) and K = 2."""
    pytest.importorskip("gym_pusht", reason="pusht simulator not installed: pip install 'policy-export[sim]'")
    from conftest import one_torch_thread
    from typer.testing import CliRunner

    from policy_export.checkpoint import load_checkpoint
    from policy_export.cli.app import app
    from policy_export.demo_pi import PUSHT_PI05, build_pi_checkpoint
    from policy_export.export.onnx import export_onnx

    with one_torch_thread():
        root = build_pi_checkpoint(tmp_path / "pretrained_model", PUSHT_PI05)
        onnx_path = export_onnx(load_checkpoint(root), tmp_path / "pusht_pi05.onnx").path
    out = tmp_path / "eval.json"
    args = ["eval", "-c", str(root), "-a", str(onnx_path), "--env", "pusht", "--episodes", "1", "--steps", "12"]
    res = CliRunner().invoke(app, [*args, "--seed", "3", "--report", str(out), "--no-chaos"])
    assert res.exit_code == 0, res.output
    realtime = ["--client", "realtime", "--latency-steps", "0,2", "--report", str(tmp_path / "rt.json"), "--no-chaos"]
    res = CliRunner().invoke(app, [*args, "--seed", "3", *realtime])
    assert res.exit_code == 0, res.output
    rows = {r["runner"]: r for r in json.loads(out.read_text())["rows"]}
    eager, onnx = rows["eager"], rows["pusht_pi05.onnx"]
    assert eager["steps"] == onnx["steps"] == 12
    assert onnx["max_diff"] < 1e-4 and onnx["first_divergence"] is None and onnx["same_outcome"]
    rt = {r["runner"]: r for r in json.loads((tmp_path / "rt.json").read_text())["rows"]}
    k0, k2 = rt["pusht_pi05.onnx realtime K=0"], rt["pusht_pi05.onnx realtime K=2"]
    assert k0["max_diff"] < 1e-4 and k0["first_divergence"] is None  # K = 0 is the synchronous client
    assert k2["steps"] == 12
