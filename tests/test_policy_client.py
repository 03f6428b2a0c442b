"""PolicyClient: LeRobot-style observations in, robot-unit actions out, any backend.

Parity here is the client's ``predict_chunk`` against LeRobot's eager preprocessor +
``predict_action_chunk`` + postprocessor on the same observation, for float and uint8
artifacts and every observation form a robot loop may hand over. The Triton backend is
checked against closed ports (fast, one clear line) and against a real Triton server
(test_triton_client_real_server) when the server harness is available.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
from test_runtime_shim import run_blocked

from policy_export.compare import compare
from policy_export.errors import BadInputError, UnavailableError
from policy_export.families import eager_chunk
from policy_export.inputs import checkpoint_inputs
from policy_export.runtime import PolicyClient, ShimSettings
from policy_export.runtime.triton import check_signature, metadata_from_triton

ATOL = 1e-4


@pytest.fixture(scope="module")
def frames(small_loaded):
    """A batch of 3 raw camera frames (uint8 HWC) and states around the dataset statistics."""
    return checkpoint_inputs(small_loaded, 3, np.random.default_rng(7), image_format="uint8")


def _obs(ckpt, state, image):
    return {ckpt.spec.state_key: state, ckpt.spec.cameras[0].key: image}


def test_predict_chunk_matches_lerobot_for_every_observation_form(small_loaded, small_onnx, small_uint8_onnx, frames):
    import torch

    ref = eager_chunk(small_loaded, frames, image_format="uint8")  # LeRobot's own uint8 -> float conversion
    hwc = frames["image"]
    chw_float = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)
    forms = {
        "raw uint8 HWC frames": hwc,
        "float CHW as the preprocessor takes": chw_float,
        "float HWC": np.ascontiguousarray(chw_float.transpose(0, 2, 3, 1)),
        "torch float CHW": torch.from_numpy(chw_float),
    }
    for artifact in (small_onnx, small_uint8_onnx):
        with PolicyClient.from_artifact(artifact) as client:
            outs = {}
            for name, image in forms.items():
                state = torch.from_numpy(frames["state"]) if name.startswith("torch") else frames["state"]
                out = client.predict_chunk(_obs(small_loaded, state, image))
                outs[name] = out.numpy() if name.startswith("torch") else out
                assert outs[name].shape == ref.shape, name
                np.testing.assert_allclose(outs[name], ref, atol=ATOL, rtol=0, err_msg=f"{artifact.name}: {name}")
            # Every form reaches the core as the very same bytes.
            for name in forms:
                np.testing.assert_array_equal(outs[name], outs["raw uint8 HWC frames"], err_msg=name)


def test_unbatched_observation_gives_lerobots_batch_of_one(small_loaded, small_onnx, frames):
    import torch

    with PolicyClient.from_artifact(small_onnx) as client:
        one = {k: v[0] for k, v in _obs(small_loaded, frames["state"], frames["image"]).items()}
        action = client.select_action(one)
        assert isinstance(action, np.ndarray) and action.shape == (1, small_loaded.spec.action_dim)
        ref = eager_chunk(small_loaded, {k: v[:1] for k, v in frames.items()}, image_format="uint8")
        np.testing.assert_allclose(action, ref[:, 0], atol=ATOL, rtol=0)
        client.reset()
        tensor_obs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in one.items()}
        out = client.select_action(tensor_obs)
        assert isinstance(out, torch.Tensor) and tuple(out.shape) == (1, small_loaded.spec.action_dim)
        np.testing.assert_array_equal(out.numpy(), action)


def test_settings_come_from_the_artifact(small_loaded, small_onnx):
    with PolicyClient.from_artifact(small_onnx) as client:
        spec = small_loaded.spec
        assert client.settings == ShimSettings(spec.chunk_size, spec.n_action_steps, spec.temporal_ensemble_coeff)
        assert "queue" in repr(client)
    with pytest.raises(BadInputError, match="shim chunk_size 7 != the model's 20"):
        PolicyClient.from_artifact(small_onnx, settings=ShimSettings(7, 7))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o, k: o.pop(k["cam"]), "observation has no 'observation.images.top'"),
        (lambda o, k: o.update({k["state"]: np.zeros(4)}), r"observation.state: shape \(4,\) != \(6,\)"),
        (lambda o, k: o.update({k["cam"]: np.zeros((3, 3, 50, 50), np.uint8)}), r"neither \(3, 96, 128\) nor"),
        (lambda o, k: o.update({k["cam"]: np.zeros((2, 96, 128, 3), np.uint8)}), "batch size 2 != 3"),
        (lambda o, k: o.update({k["state"]: np.array(list("abcdef"))}), "observation.state: not numbers"),
    ],
)
def test_bad_observations_are_one_clear_line(small_loaded, small_onnx, frames, change, message):
    keys = {"state": small_loaded.spec.state_key, "cam": small_loaded.spec.cameras[0].key}
    obs = _obs(small_loaded, frames["state"], frames["image"])
    change(obs, keys)
    with PolicyClient.from_artifact(small_onnx) as client, pytest.raises(BadInputError, match=message) as err:
        client.select_action(obs)
    assert "\n" not in str(err.value)


def test_artifact_metadata_without_the_onnx_package(small_onnx, small_loaded, frames, tmp_path):
    """A robot host has numpy + onnxruntime only: no onnx, torch or lerobot."""
    import json

    from policy_export.artifacts import inspect_artifact

    spec = small_loaded.spec
    np.save(tmp_path / "state.npy", frames["state"][0])
    np.save(tmp_path / "frame.npy", frames["image"][0])
    proc = run_blocked(
        f"""
        import json, numpy as np
        from pathlib import Path
        from policy_export.artifacts import inspect_artifact
        from policy_export.runtime import PolicyClient
        info = inspect_artifact(Path({str(small_onnx)!r}))
        sig = lambda ts: [[t.name, t.dtype, *map(str, t.shape)] for t in ts]
        print(json.dumps({{"meta": info.metadata.to_json(), "inputs": sig(info.inputs), "outputs": sig(info.outputs)}}))
        obs = {{{spec.state_key!r}: np.load({str(tmp_path / "state.npy")!r}),
               {spec.cameras[0].key!r}: np.load({str(tmp_path / "frame.npy")!r})}}
        with PolicyClient.from_artifact({str(small_onnx)!r}) as client:
            np.save({str(tmp_path / "action.npy")!r}, client.select_action(obs))
        assert not [m for m in sys.modules if m.split(".")[0] in ("onnx", "torch", "lerobot")]
        """,
        ("onnx", "torch", "lerobot", "tritonclient"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    info = inspect_artifact(small_onnx)  # through the onnx package, in this process
    sig = lambda ts: [[t.name, t.dtype, *map(str, t.shape)] for t in ts]  # noqa: E731
    assert seen == {"meta": info.metadata.to_json(), "inputs": sig(info.inputs), "outputs": sig(info.outputs)}
    with PolicyClient.from_artifact(small_onnx) as client:
        here = client.select_action({spec.state_key: frames["state"][0], spec.cameras[0].key: frames["image"][0]})
    np.testing.assert_array_equal(np.load(tmp_path / "action.npy"), here)


def test_from_env_picks_the_backend(small_onnx):
    with PolicyClient.from_env({"POLICY_ARTIFACT": str(small_onnx)}) as client:
        assert client.backend.name == "onnxruntime-cpu"
    with PolicyClient.from_env({"INFERENCE_MODE": "local", "POLICY_ARTIFACT": str(small_onnx)}) as client:
        assert client.metadata.spec.chunk_size == 20
    for env, message in [
        ({}, "INFERENCE_MODE must be 'local' or 'triton'"),
        ({"INFERENCE_MODE": "local"}, "needs POLICY_ARTIFACT"),
        ({"INFERENCE_MODE": "triton", "TRITON_URL": "localhost:8001"}, "needs TRITON_URL=<host:port> and MODEL_NAME"),
        ({"INFERENCE_MODE": "cloud"}, "got 'cloud'"),
        ({"POLICY_ARTIFACT": str(small_onnx), "INFERENCE_PROVIDER": "gpu"}, "provider 'gpu'.*cpu, cuda, tensorrt"),
        ({"INFERENCE_MODE": "triton", "TRITON_URL": "h:1", "MODEL_NAME": "m", "TRITON_TIMEOUT_S": "5s"}, "'5s'"),
    ]:
        with pytest.raises(BadInputError, match=message):
            PolicyClient.from_env(env)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_server_down_is_one_clear_line_and_fast(protocol):
    pytest.importorskip("tritonclient." + protocol)
    url = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(UnavailableError) as err:
        PolicyClient.from_triton(url, "act_policy", protocol=protocol, timeout_s=2.0)
    elapsed = time.monotonic() - t0
    msg = str(err.value)
    assert "\n" not in msg
    assert f"Triton {protocol}://{url} model 'act_policy'" in msg and "liveness check failed" in msg
    assert "TRITON_URL" in msg
    # Not a benchmark: a dead server must not stall the robot loop for longer than its timeout.
    assert elapsed < 2.0 + 5.0, elapsed


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_server_that_never_answers_times_out(protocol):
    """A port that accepts connections but never speaks (a hung server) ends in the timeout, not a hang."""
    pytest.importorskip("tritonclient." + protocol)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(
            UnavailableError, match=r"liveness check failed: .*(Deadline Exceeded|timed out).*timeout 1 s"
        ):
            PolicyClient.from_triton(url, "act_policy", protocol=protocol, timeout_s=1.0)
        assert time.monotonic() - t0 < 1.0 + 5.0


def test_triton_env_goes_through_the_same_checks():
    pytest.importorskip("tritonclient.grpc")
    env = {"INFERENCE_MODE": "triton", "TRITON_URL": f"grpc://127.0.0.1:{_closed_port()}", "MODEL_NAME": "m"}
    with pytest.raises(UnavailableError, match="liveness check failed"):
        PolicyClient.from_env(env | {"TRITON_TIMEOUT_S": "1"})
    with pytest.raises(BadInputError, match="timeout must be > 0"):  # 0 would mean: wait forever
        PolicyClient.from_env(env | {"TRITON_TIMEOUT_S": "0"})


def _served(meta):
    """What a Triton server reports for a policy-export model (metadata + config JSON)."""
    shapes, dtypes = meta.input_shapes(), meta.input_dtypes()
    wire = {"float32": "FP32", "uint8": "UINT8"}
    inputs = [{"name": n, "datatype": wire[dtypes[n]], "shape": [-1, *shapes[n][1:]]} for n in meta.spec.input_names]
    outputs = [{"name": "action_chunk", "datatype": "FP32", "shape": [-1, meta.spec.chunk_size, meta.spec.action_dim]}]
    return {"inputs": inputs, "outputs": outputs}


def test_triton_metadata_and_signature_checks(small_onnx):
    from policy_export.artifacts import inspect_artifact

    meta = inspect_artifact(small_onnx).metadata
    served = _served(meta)
    full = {"max_batch_size": 8, "parameters": {"version.3.metadata": {"string_value": meta.to_json()}}}
    assert metadata_from_triton(full, served, "here", "3").spec == meta.spec
    check_signature(meta, served, 8, "here")  # matches: no error

    cams = '[{"key": "observation.images.top", "input_name": "image", "shape": [3, 96, 128]}]'
    loose = {
        "max_batch_size": 8,
        "parameters": {
            "chunk_size": {"string_value": "20"},
            "n_action_steps": {"string_value": "10"},
            "version.2.n_action_steps": {"string_value": "4"},
            "temporal_ensemble_coeff": {"string_value": ""},
            "cameras": {"string_value": cams},
        },
    }
    rebuilt = metadata_from_triton(loose, served, "here", "1")
    assert rebuilt.spec.cameras == meta.spec.cameras and rebuilt.spec.n_action_steps == 10
    assert rebuilt.spec.host.ensemble_coeff is None
    assert metadata_from_triton(loose, served, "here", "2").spec.n_action_steps == 4  # per-version value wins

    with pytest.raises(BadInputError, match="no policy parameters"):
        metadata_from_triton({"parameters": {}}, served, "here")
    edited = {"parameters": {**loose["parameters"], "cameras": {"string_value": "[{'key': 'top'}]"}}}
    with pytest.raises(BadInputError, match="here: model config parameters are not valid policy metadata"):
        metadata_from_triton(edited, served, "here")
    wrong = _served(meta)
    wrong["inputs"][1]["shape"] = [-1, 3, 64, 64]
    wrong["outputs"][0]["datatype"] = "FP16"
    with pytest.raises(
        BadInputError, match=r"image shape \[-1, 3, 64, 64\] != \[-1, 3, 96, 128\]; action_chunk type FP16 != FP32"
    ):
        check_signature(meta, wrong, 8, "here")
    # TorchScript models are served under Triton's name__index convention.
    renamed = {"state": "state__0", "image": "image__1", "action_chunk": "action_chunk__0"}
    ts = {k: [dict(t, name=renamed[t["name"]]) for t in v] for k, v in served.items()}
    check_signature(meta, ts, 8, "here", renamed)
    with pytest.raises(BadInputError, match="no tensor 'state'"):
        check_signature(meta, ts, 8, "here")


# -- against a real Triton server (tests/triton_harness.py; skipped locally without .venv-triton) ------------


@pytest.fixture(scope="module")
def triton(small_onnx, small_fp16_onnx, small_uint8_onnx, tmp_path_factory):
    from triton_harness import triton_server

    from policy_export.triton.options import TritonOptions
    from policy_export.triton.repo import write_version

    repo = tmp_path_factory.mktemp("client_repo")
    # Two versions under version_policy all; max_batch_size 2 makes the client split larger batches.
    write_version(small_onnx, repo, "act", 1, TritonOptions(max_batch_size=2, version_policy="all"))
    write_version(small_fp16_onnx, repo, "act", 2, TritonOptions(max_batch_size=2, version_policy="all"))
    write_version(small_uint8_onnx, repo, "frames", 1, TritonOptions(backend="python"))
    with triton_server(repo) as server:
        yield server


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_client_real_server(triton, protocol, small_loaded, small_onnx, frames):
    from policy_export.artifacts import inspect_artifact

    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    with PolicyClient.from_triton(url, "act", version=1, protocol=protocol) as client:
        assert client.metadata.spec == inspect_artifact(small_onnx).metadata.spec
        assert client.settings == ShimSettings(20, 10) and client.backend.max_batch_size == 2
        ref = eager_chunk(small_loaded, frames, image_format="uint8")
        five = {k: np.concatenate([v, v[:2]]) for k, v in frames.items()}  # 5 robots > max_batch_size 2
        chunk = client.predict_chunk(_obs(small_loaded, five["state"], five["image"]))
        np.testing.assert_allclose(chunk[:3], ref, atol=ATOL, rtol=0)
        with PolicyClient.from_artifact(small_onnx) as local:
            np.testing.assert_allclose(
                chunk, local.predict_chunk(_obs(small_loaded, five["state"], five["image"])), atol=1e-6
            )

    # Unpinned: the newest served version, pinned for the episode, with that version's metadata.
    with PolicyClient.from_triton(f"{protocol}://{url}", "act", protocol=None) as client:
        assert client.backend.version == "2" and client.metadata.precision == "fp16"

    with PolicyClient.from_triton(url, "frames", protocol=protocol) as client:
        assert client.metadata.image_format == "uint8"
        out = client.predict_chunk(_obs(small_loaded, frames["state"], frames["image"]))  # raw HWC frames on the wire
        np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


def test_triton_rollout_matches_lerobot_select_action(triton, small_loaded):
    from policy_export.rollout import rollout_modes, run_rollout

    (mode,) = rollout_modes(small_loaded)
    assert ShimSettings.from_spec(mode.spec) == ShimSettings.from_spec(small_loaded.spec)
    with PolicyClient.from_triton(triton.grpc_url, "act", version=1) as client:
        trace = run_rollout(small_loaded, client, mode, steps=20, batch_size=2, seed=3, image_format="float32")
    assert trace.client_core_calls == trace.lerobot_chunk_calls == 3  # steps 0, 10 (queue dry), 11 (reset)
    stats = compare(trace.reference, trace.candidate, ATOL)
    assert stats.passed, stats


def test_triton_model_or_version_that_differs_is_one_clear_line(triton):
    with pytest.raises(UnavailableError) as err:
        PolicyClient.from_triton(triton.grpc_url, "policy", timeout_s=5)
    msg = str(err.value)
    assert "model 'policy'" in msg and "not ready" in msg and "act/1" in msg and "\n" not in msg
    with pytest.raises((UnavailableError, BadInputError), match="version 7"):
        PolicyClient.from_triton(triton.http_url, "act", version=7, protocol="http")


def test_from_env_triton_against_the_real_server(triton, small_loaded, frames):
    env = {"INFERENCE_MODE": "triton", "TRITON_URL": triton.http_url, "TRITON_PROTOCOL": "http"}
    with PolicyClient.from_env(env | {"MODEL_NAME": "act", "MODEL_VERSION": "1"}) as client:
        action = client.select_action(_obs(small_loaded, frames["state"][0], frames["image"][0]))
    ref = eager_chunk(small_loaded, {k: v[:1] for k, v in frames.items()}, image_format="uint8")
    np.testing.assert_allclose(action, ref[:, 0], atol=ATOL, rtol=0)


def test_closed_loop_example_runs_locally_and_against_triton(triton, small_onnx):
    import subprocess
    import sys

    example = Path(__file__).resolve().parent.parent / "examples" / "closed_loop.py"
    args = [sys.executable, str(example), "--artifact", str(small_onnx), "--steps", "12", "--robots", "2"]
    proc = subprocess.run([*args, "--triton-url", triton.grpc_url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "local ONNX Runtime: PolicyClient(onnxruntime-cpu, queue" in proc.stdout
    assert "Triton grpc: PolicyClient(triton-grpc, queue" in proc.stdout
    # The local ORT model and the server's "latest" version (the fp16 one) agree within fp16 tolerance.
    diff = float(proc.stdout.rsplit("max |difference| ", 1)[1].split()[0])
    assert diff < 5e-2, proc.stdout


def test_torchscript_artifact_through_the_same_client(small_loaded, small_torchscript, frames):
    ref = eager_chunk(small_loaded, frames, image_format="uint8")
    with PolicyClient.from_artifact(small_torchscript) as client:
        assert client.backend.name == "torchscript-cpu" and client.settings == ShimSettings(20, 10)
        chunk = client.predict_chunk(_obs(small_loaded, frames["state"], frames["image"]))
    np.testing.assert_allclose(chunk, ref, atol=ATOL, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_onnxruntime_gpu_providers(provider, small_loaded, small_onnx, frames):
    import onnxruntime as ort

    from policy_export.runners.onnxrt import PROVIDERS

    if PROVIDERS[provider][0] not in ort.get_available_providers():
        pytest.skip(f"{PROVIDERS[provider][0]} not available here (needs onnxruntime-gpu on an NVIDIA host)")
    ref = eager_chunk(small_loaded, frames, image_format="uint8")
    with PolicyClient.from_artifact(small_onnx, provider=provider) as client:
        assert client.backend.name == f"onnxruntime-{provider}"
        chunk = client.predict_chunk(_obs(small_loaded, frames["state"], frames["image"]))
    np.testing.assert_allclose(chunk, ref, atol=1e-3 if provider == "tensorrt" else ATOL, rtol=0)


def test_missing_gpu_provider_is_a_clear_error(small_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has CUDA: the error path is for hosts without it")
    with pytest.raises(UnavailableError, match="CUDAExecutionProvider is not available here"):
        PolicyClient.from_artifact(small_onnx, provider="cuda")


def test_triton_url_scheme_picks_the_protocol():
    from policy_export.runtime.triton import split_url

    assert split_url("127.0.0.1:8000", None) == ("127.0.0.1:8000", "grpc")
    assert split_url("http://127.0.0.1:8000/", None) == ("127.0.0.1:8000", "http")
    assert split_url("grpc://h:8001", "grpc") == ("h:8001", "grpc")
    with pytest.raises(BadInputError, match="says http but protocol='grpc'"):
        split_url("http://h:8000", "grpc")
    with pytest.raises(BadInputError, match="TLS is not supported"):
        split_url("https://h:8000", None)
    with pytest.raises(BadInputError, match="one of grpc, http"):
        split_url("h:8000", "websocket")
    assert split_url("[::1]:8001", "http") == ("[::1]:8001", "http")
    for bad in ("", "http://", "localhost", "h:port", "h:8000/v2", "a b:1"):  # tritonclient: ValueError traceback
        with pytest.raises(BadInputError, match="expected host:port"):
            split_url(bad, "http")
