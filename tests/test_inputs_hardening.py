"""Issue 18's input classes: every file a command reads is an input, noise and frames of the
wrong kind are refused by name.

Each test drives the real code path (the CLI, or the runtime client on a real exported
artifact) and asserts what the user sees: one line, exit 2, and every input byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.errors import BadInputError
from policy_export.runtime import PolicyClient

runner = CliRunner()
PRE = "policy_preprocessor.json"
STATE = "policy_preprocessor_step_3_normalizer_processor.safetensors"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(output: str) -> str:
    return " ".join(output.split())


def _point_state_file(ckpt: Path, value: str) -> None:
    """Make the preprocessor JSON name its normalizer state file as ``value`` (where the test put the file)."""
    doc = json.loads((ckpt / PRE).read_text())
    for step in doc["steps"]:
        if step.get("state_file") == STATE:
            step["state_file"] = value
    (ckpt / PRE).write_text(json.dumps(doc, indent=2))


@pytest.fixture
def outside_state(small_ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint whose preprocessor JSON places its state file outside the folder (``../stats.safetensors``)."""
    ckpt = tmp_path / "run" / "pretrained_model"
    shutil.copytree(small_ckpt, ckpt)
    stats = tmp_path / "run" / "stats.safetensors"
    (ckpt / STATE).rename(stats)
    _point_state_file(ckpt, "../stats.safetensors")
    return ckpt, stats


# -- item 2: every file a command reads is an input ------------------------------------------------


@pytest.mark.parametrize("force", [True, False])
def test_onnx_output_on_a_state_file_outside_the_checkpoint_is_refused(outside_state, force):
    """The reported break: ``onnx --output X --force`` where the JSON places a state file at X replaced it."""
    ckpt, stats = outside_state
    before = digest(stats)
    res = runner.invoke(app, ["onnx", "-c", str(ckpt), "-o", str(stats), *(["--force"] if force else [])])
    assert res.exit_code == 2, res.output
    assert "inputs are never overwritten" in one_line(res.output), res.output
    assert digest(stats) == before


@pytest.mark.parametrize(
    "where",
    ["dotdot", "absolute", "symlink"],
)
def test_a_state_file_outside_the_checkpoint_is_refused_naming_the_json_and_field(small_ckpt, tmp_path, where):
    ckpt = tmp_path / "run" / "pretrained_model"
    shutil.copytree(small_ckpt, ckpt)
    stats = tmp_path / "elsewhere" / "stats.safetensors"
    stats.parent.mkdir()
    (ckpt / STATE).rename(stats)
    if where == "dotdot":
        _point_state_file(ckpt, "../../elsewhere/stats.safetensors")
    elif where == "absolute":
        _point_state_file(ckpt, str(stats))
    else:  # the JSON is as training wrote it; the file itself is a link out of the folder
        (ckpt / STATE).symlink_to(stats)
    res = runner.invoke(app, ["inspect", "-c", str(ckpt)])
    assert res.exit_code == 2, res.output
    line = one_line(res.output)
    assert PRE in line and "state_file" in line and "outside the checkpoint folder" in line, res.output
    assert len(res.output.strip().splitlines()) <= 3  # one line (wrapped at most by the console)


def test_verify_reports_never_overwrite_a_state_file_or_onnx_external_data(small_ckpt, small_onnx, tmp_path):
    """verify reads the checkpoint's state files and an ONNX model's external data: both are inputs."""
    import onnx

    model = onnx.load(str(small_onnx))
    art = tmp_path / "ext" / "policy.onnx"
    art.parent.mkdir()
    onnx.save_model(model, str(art), save_as_external_data=True, location="weights.bin", size_threshold=1024)
    data = art.parent / "weights.bin"
    ckpt = tmp_path / "ckpt"
    shutil.copytree(small_ckpt, ckpt)
    before = (digest(data), digest(ckpt / STATE))
    for out in (data, ckpt / STATE):
        res = runner.invoke(app, ["verify", "-c", str(ckpt), "-a", str(art), "--report", str(out), "--force"])
        assert res.exit_code == 2 and "inputs are never overwritten" in one_line(res.output), res.output
    assert (digest(data), digest(ckpt / STATE)) == before


# -- item 8: a noise source returning NaN, integer frames of the wrong dtype -------------------------


def test_a_noise_source_returning_nan_is_refused(ddpm_onnx):
    with PolicyClient.from_artifact(ddpm_onnx, seed=0) as client:
        spec = client.metadata.spec
        obs = {spec.state_key: np.zeros(spec.state_dim, np.float32)}
        for cam in spec.cameras:
            obs[cam.key] = np.full(cam.shape, 0.5, np.float32)
        shapes = {n.name: tuple(n.shape) for n in spec.noise_inputs}

        def nan_noise(rows: int) -> dict[str, np.ndarray]:
            out = {name: np.zeros((rows, *shape), np.float32) for name, shape in shapes.items()}
            out["noise"][0, 1, 0] = np.nan
            return out

        client.host.noise_source = nan_noise  # type: ignore[attr-defined]
        with pytest.raises(BadInputError, match=r"noise_source gave noise with NaN or inf at \[0, 1, 0\]") as err:
            client.select_action(obs)
        assert "\n" not in str(err.value)
        client.host.noise_source = lambda rows: [np.zeros(1)]  # type: ignore[attr-defined]
        with pytest.raises(BadInputError, match="must return a dict"):
            client.select_action(obs)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int64])
@pytest.mark.parametrize("check_inputs", [True, False])
def test_integer_frames_of_the_wrong_dtype_are_named_as_such(small_onnx, dtype, check_inputs):
    with PolicyClient.from_artifact(small_onnx, check_inputs=check_inputs) as client:
        spec = client.metadata.spec
        c, h, w = spec.cameras[0].shape
        obs = {
            spec.state_key: np.zeros(spec.state_dim, np.float32),
            spec.cameras[0].key: np.full((h, w, c), 200, dtype),  # 8-bit values in a wider integer type
        }
        with pytest.raises(BadInputError, match=rf"image dtype {np.dtype(dtype).name} .*uint8") as err:
            client.select_action(obs)
        assert "float image values" not in str(err.value) and "\n" not in str(err.value)


# -- item 7: names and locks ---------------------------------------------------------------------


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("name", ["act\n", "act\r\n", "act/x", "-act", "a" * 201, "act "])
def test_a_bad_name_is_one_line_naming_it_and_leaves_nothing_behind(small_onnx, tmp_path, name):
    existing = tmp_path / "repo"
    existing.mkdir()
    for repo in (tmp_path / "new-repo", existing):
        res = runner.invoke(app, ["triton-repo", "-a", str(small_onnx), "--repo", str(repo), "--model", name])
        assert res.exit_code == 2, (name, res.output)
        assert "--model" in res.output and len(res.output.strip().splitlines()) <= 2, res.output
    assert _tree(tmp_path) == ["repo"]  # no lock file, no model folder, no new repository


def test_a_dangling_symlink_where_the_lock_goes_creates_nothing_outside(small_onnx, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir()
    (repo / ".act.lock").symlink_to(victim)
    res = runner.invoke(app, ["triton-repo", "-a", str(small_onnx), "--repo", str(repo), "--model", "act"])
    assert res.exit_code == 2, res.output
    assert ".act.lock" in res.output and "symbolic link" in one_line(res.output), res.output
    assert not victim.exists() and not (repo / "act").exists()


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
import policy_export.fsutil as fsutil
import policy_export.triton.repo as repo_mod

where = sys.argv[4]
if where == "staging":  # killed while the new model folder is being built
    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    repo_mod.check_model = killed
else:  # killed between the two renames: the original is moved aside, the new one not yet in place
    real_replace = os.replace
    def replace(src, dst):
        if str(src).endswith(".partial"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    fsutil.os.replace = replace
repo_mod.write_version(Path(sys.argv[1]), Path(sys.argv[2]), "act", int(sys.argv[3]))
"""


@pytest.mark.parametrize("where", ["staging", "between-renames"])
def test_a_writer_killed_by_sigkill_is_cleaned_up_by_the_next(small_onnx, tmp_path, where):
    import subprocess
    import sys

    from policy_export.triton.repo import write_version

    repo = tmp_path / "repo"
    write_version(small_onnx, repo, "act", 1, {"version_policy": "all"})
    v1 = digest(repo / "act" / "1" / "model.onnx")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(small_onnx), str(repo), "2", where], capture_output=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".act.")]
    assert any(n.endswith(".partial") for n in leftovers), leftovers  # what a killed writer leaves
    if where == "between-renames":
        assert not (repo / "act").exists() and any(n.endswith(".old") for n in leftovers), leftovers

    res = runner.invoke(
        app, ["triton-repo", "-a", str(small_onnx), "--repo", str(repo), "--model", "act", "--version", "3"]
    )
    assert res.exit_code == 0, res.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".act.")] == []
    assert sorted(p.name for p in (repo / "act").iterdir() if p.is_dir()) == ["1", "3"]
    assert digest(repo / "act" / "1" / "model.onnx") == v1


def test_staging_folders_of_a_same_named_model_in_a_sibling_repository_are_not_touched(small_onnx, tmp_path):
    """Two repositories in one folder share it as their staging root: each cleans only its own."""
    from policy_export.fsutil import _staging_prefix, remove_stale_staging

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    other = tmp_path / f"{_staging_prefix(b / 'act')}abcdefgh.partial"
    other.mkdir()  # a live writer of b/act, as far as a/act's writer can tell
    also_other = tmp_path / f"{_staging_prefix(a / 'act.v2')}abcdefgh.partial"
    also_other.mkdir()
    mine = tmp_path / f"{_staging_prefix(a / 'act')}abcdefgh.partial"
    mine.mkdir()
    assert remove_stale_staging(a / "act", tmp_path) == [mine]
    assert other.exists() and also_other.exists() and not mine.exists()


# -- item 5: OS errors are one line, exit 2, in every command -------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path):
    """Real small file systems: a 1 MiB tmpfs (``full``) and a read-only one (``ro``), unmounted after."""
    import subprocess

    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    mounted: list[Path] = []

    def mount(*args: str) -> None:
        subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)

    try:
        mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full))
        mounted.append(full)
        mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ro))
        mounted.append(ro)
        mount("-o", "remount,ro", str(ro))
    except (OSError, subprocess.SubprocessError) as exc:
        for m in reversed(mounted):
            subprocess.run(["umount", str(m)], capture_output=True, timeout=30)
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {exc}")
    try:
        yield full, ro
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], capture_output=True, timeout=30)


def _fill(folder: Path) -> None:
    """Leave no byte free, so even a one-line report cannot be written."""
    try:
        with open(folder / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    print("left on the small disk:", sorted(str(p.relative_to(folder)) for p in folder.rglob("*")))


def _assert_one_os_line(res, path: Path, what: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and not isinstance(res.exception, OSError), res.output
    error = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1, res.output
    assert str(path) in one_line(res.output) and what in res.output.lower(), res.output


def _no_staging_left(*folders: Path) -> None:
    for folder in folders:
        left = [p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".old"))]
        assert not left, left


def test_a_full_disk_is_one_line_exit_2_in_every_writing_command(small_fs, small_ckpt, small_onnx, tmp_path):
    full, _ = small_fs
    cases = [
        (["onnx", "-c", str(small_ckpt), "-o", str(full / "p.onnx")], full / "p.onnx"),
        (["triton-repo", "-a", str(small_onnx), "--repo", str(full / "repo"), "--name", "act"], full / "repo"),
    ]
    for args, path in cases:
        _assert_one_os_line(runner.invoke(app, args), path, "no space left")
    _fill(full)
    res = runner.invoke(app, ["verify", "-c", str(small_ckpt), "-a", str(small_onnx), "--batch-sizes", "1",
                              "--samples", "1", "--report", str(full / "parity.json")])  # fmt: skip
    _assert_one_os_line(res, full / "parity.json", "no space left")
    _no_staging_left(full, tmp_path)


@pytest.mark.heavy  # make test's time budget (~14 s on a 2-core AVX2 machine); nox -s heavy runs it
def test_torchscript_on_a_full_disk_is_one_line_not_an_abort(small_fs, small_ckpt):
    """torch's own file writer aborted the process (SIGABRT, exit 134) when the disk filled."""
    import subprocess
    import sys

    full, _ = small_fs
    exe = str(Path(sys.executable).with_name("policy-export"))
    proc = subprocess.run(
        [exe, "torchscript", "-c", str(small_ckpt), "-o", str(full / "p.pt")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{full / 'p.pt'}: no space left" in one_line(proc.stderr)
    _no_staging_left(full)


def test_a_read_only_mount_is_one_line_exit_2(small_fs, small_ckpt, small_onnx):
    _, ro = small_fs
    cases = [
        (["onnx", "-c", str(small_ckpt), "-o", str(ro / "p.onnx")], ro),
        (["triton-repo", "-a", str(small_onnx), "--repo", str(ro / "repo"), "--name", "act"], ro / "repo"),
        (["export", "-c", str(small_ckpt), "--out-dir", str(ro / "out")], ro / "out"),
        (["bench-shim", "--steps", "10", "--no-lerobot", "--json", str(ro / "shim.json")], ro),
    ]
    for args, path in cases:
        _assert_one_os_line(runner.invoke(app, args), path, "read-only file system")


_FEW_FILES = """
import resource, sys
from policy_export.cli.app import app
import policy_export.checkpoint.files, safetensors  # what inspect reads with, imported: the limit hits the files
used = len(__import__("os").listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
app(sys.argv[1:], prog_name="policy-export")
"""


def test_too_many_open_files_is_one_line_exit_2(small_ckpt):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _FEW_FILES, "inspect", "-c", str(small_ckpt)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "too many open files" in proc.stderr, proc.stderr[-3000:]


# -- item 4: configs are checked against the weights before anything is built ----------------------


def _with_config(src: Path, dst: Path, **changes: object) -> Path:
    """``src`` with config.json edited; the other files hard-linked (no copy of the weights)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "config.json":
            os.link(f, dst / f.name)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _limited(gb: int):
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (gb << 30, gb << 30))

    return limit


@pytest.mark.parametrize(
    ("family", "changes", "says"),
    [
        ("act", {"dim_model": 100_000}, "dim_model is 100000, but model.safetensors was trained with 128"),
        ("act", {"chunk_size": 10**9}, "chunk_size is 1000000000, but model.safetensors was trained with 20"),
        (
            "act",
            {"vision_backbone": "resnet152"},
            "vision_backbone is 'resnet152', but model.safetensors holds resnet18",
        ),
        ("act", {"n_encoder_layers": 10**6}, "n_encoder_layers is 1000000, but model.safetensors holds 2"),
        (
            "diffusion",
            {"n_obs_steps": 3000, "horizon": 4096},
            "n_obs_steps is 3000, but model.safetensors was trained with 1",
        ),
        ("diffusion", {"horizon": 10**9}, "horizon is 1000000000; no weight records it"),
        ("diffusion", {"crop_shape": [100_000, 100_000]}, "crop_shape [100000, 100000] makes a 3125x3125 feature map"),
        ("diffusion", {"down_dims": [16, 32, 64, 128]}, "the number of down_dims is 4, but model.safetensors holds 2"),
    ],
)
def test_configs_disagreeing_with_the_weights_are_refused_before_anything_is_built(
    family, changes, says, small_ckpt, ddpm_ckpt, tmp_path
):
    """Refused in one line by a real ``inspect`` under a 3 GB address-space limit (today's main built
    the model first: minutes and > 5 GB); the timeout is generous, not a performance assertion."""
    import subprocess
    import sys

    src = small_ckpt if family == "act" else ddpm_ckpt
    ckpt = _with_config(src, tmp_path / "ckpt", **changes)
    exe = str(Path(sys.executable).with_name("policy-export"))
    proc = subprocess.run(
        [exe, "inspect", "-c", str(ckpt)], capture_output=True, text=True, timeout=300, preexec_fn=_limited(3)
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, proc.stderr[-3000:]
    assert says in one_line(proc.stderr) and "config.json" in proc.stderr, proc.stderr
