"""ONNX external data (the path a model over protobuf's 2 GB limit takes), on a small ACT with the
threshold lowered: one ``<file>.onnx.data`` beside the file, listed as an input and an output, never
written over a file without ``--force``, copied by triton-repo and covered by its checksum."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from policy_export.errors import BadInputError


@pytest.fixture(scope="module")
def external(small_loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from policy_export.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("external") / "small.onnx"
    res = export_onnx(small_loaded, path, exporter="legacy", external_data_threshold=1024)
    assert res.external_data == path.with_name("small.onnx.data") and res.quick_check_max_abs <= 1e-4
    return path


def test_weights_go_to_one_data_file_and_the_model_runs_as_the_embedded_one(external: Path, small_onnx: Path) -> None:
    import onnxruntime as ort

    from policy_export.input_files import artifact_files

    data = external.with_name("small.onnx.data")
    assert sorted(p.name for p in external.parent.iterdir()) == ["small.onnx", "small.onnx.data"]  # no stage left
    assert 20 * external.stat().st_size < data.stat().st_size
    assert artifact_files(external) == [external, data]  # what the no-clobber guard and --check read
    assert artifact_files(small_onnx) == [small_onnx]
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (external, small_onnx))
    rng = np.random.default_rng(3)
    feed = {i.name: rng.uniform(0, 1, [2, *i.shape[1:]]).astype(np.float32) for i in a.get_inputs()}
    # Same weights (legacy exporter here, dynamo for the session's file): the same actions to float rounding.
    assert np.abs(a.run(None, feed)[0] - b.run(None, feed)[0]).max() <= 1e-5


def test_an_existing_data_file_is_not_overwritten_without_force(small_loaded, tmp_path: Path) -> None:
    from policy_export.export.onnx import export_onnx

    out = tmp_path / "p.onnx"
    data = tmp_path / "p.onnx.data"
    data.write_bytes(b"someone else's file")
    with pytest.raises(BadInputError, match="already exists; pass --force"):
        export_onnx(small_loaded, out, exporter="legacy", external_data_threshold=1024)
    assert data.read_bytes() == b"someone else's file" and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx.data"]  # nothing half-written


def test_triton_repo_copies_the_data_file_and_hashes_it(external: Path, tmp_path: Path) -> None:
    from policy_export.triton.config import file_sha256
    from policy_export.triton.repo import write_version
    from policy_export.triton.validate import parse_config

    res = write_version(external, tmp_path / "repo", "ext", 1, {"backend": "python"})
    vdir = tmp_path / "repo" / "ext" / "1"
    copied = vdir / "small.onnx.data"
    assert copied.read_bytes() == external.with_name("small.onnx.data").read_bytes()
    assert copied in res.files
    cfg = parse_config(tmp_path / "repo" / "ext" / "config.pbtxt")
    recorded = cfg.parameters["version.1.sha256"].string_value
    assert recorded == file_sha256(vdir / "model.onnx") != hashlib.sha256((vdir / "model.onnx").read_bytes()).hexdigest()
