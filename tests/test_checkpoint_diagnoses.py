"""Bad checkpoints are diagnosed right: a permission problem is not "corrupted", and a config.json that
disagrees with its weights is one line naming the feature, both shapes and the fix."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policy_export.cli.app import app
from policy_export.errors import BadInputError

runner = CliRunner()
NOBODY = 65534


def one_line(output: str) -> str:
    return " ".join(output.split())


def _load_error_as(uid: int | None, path: Path) -> str:
    """``load_checkpoint(path)``'s error line, run as ``uid`` (a forked child that drops root), or here."""
    from policy_export.checkpoint import load_checkpoint

    if uid is None:
        with pytest.raises(BadInputError) as info:
            load_checkpoint(path)
        return str(info.value)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: everything it needs is imported already; drop to an unprivileged user
        os.close(read_fd)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                load_checkpoint(path)
                message = "loaded without error"
            except BadInputError as exc:
                message = str(exc)
            os.write(write_fd, message.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        message = r.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_weights_are_a_permission_problem_with_the_fix(small_ckpt):
    # Root reads any file whatever its mode, so as root the check runs in a child that became `nobody`;
    # the folder must be one `nobody` can search (pytest's tmp folders are root-only).
    root = Path(tempfile.mkdtemp(prefix="policy-export-perm-"))
    try:
        root.chmod(0o755)
        ckpt = root / "pretrained_model"
        shutil.copytree(small_ckpt, ckpt)
        for p in [ckpt, *ckpt.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        weights = ckpt / "model.safetensors"
        weights.chmod(0o600 if os.geteuid() == 0 else 0o000)
        message = _load_error_as(NOBODY if os.geteuid() == 0 else None, ckpt)
        assert "permission denied" in message and f"chmod a+r {weights}" in message, message
        assert message.startswith(str(weights)) and ("mode 600" in message or "mode 0" in message), message
        assert "corrupt" not in message and "\n" not in message
    finally:
        shutil.rmtree(root)


def test_weights_replaced_by_a_folder_say_so(small_ckpt, tmp_path):
    ckpt = tmp_path / "pretrained_model"
    shutil.copytree(small_ckpt, ckpt)
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors").mkdir()
    res = runner.invoke(app, ["inspect", "-c", str(ckpt)])
    assert res.exit_code == 2 and "is a folder, not a file" in one_line(res.output), res.output


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["input_features"]["observation.state"].update(shape=[7]),
            "feature 'observation.state' has shape [7], but model.safetensors was trained with [6]",
        ),
        (
            lambda d: d["output_features"]["action"].update(shape=[3]),
            "feature 'action' has shape [3], but model.safetensors was trained with [5]",
        ),
        (lambda d: d.update(chunk_size=25), "chunk_size is 25, but model.safetensors was trained with 20"),
    ],
    ids=["state", "action", "chunk_size"],
)
def test_config_shapes_that_disagree_with_the_weights_are_one_line(small_ckpt, tmp_path, edit, expected):
    ckpt = tmp_path / "pretrained_model"
    shutil.copytree(small_ckpt, ckpt)
    cfg_path = ckpt / "config.json"
    cfg = json.loads(cfg_path.read_text())
    edit(cfg)
    cfg_path.write_text(json.dumps(cfg))
    res = runner.invoke(app, ["inspect", "-c", str(ckpt)])
    assert res.exit_code == 2, res.output
    assert res.output.count("error:") == 1 and "size mismatch" not in res.output, res.output
    line = one_line(res.output)
    assert expected in line and "use the config.json saved with these weights" in line, res.output
