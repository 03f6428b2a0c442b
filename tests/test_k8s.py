"""``policy-export k8s``: manifests validated offline against the Kubernetes OpenAPI schemas
(kubernetes-validate's bundled ones, strict); no cluster is reachable here, none is needed."""

from __future__ import annotations

import copy

import pytest
import yaml
from typer.testing import CliRunner

from policy_export.cli.app import app


def test_manifests_validate_and_name_the_s3_repository(tmp_path):
    out = tmp_path / "triton.yaml"
    res = CliRunner().invoke(app, ["k8s", "--repo", "s3://robots/models", "-m", "act", "-o", str(out), "--gpus", "1"])
    assert res.exit_code == 0, res.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    pod = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--model-repository=s3://robots/models" in pod["args"] and "--model-control-mode=explicit" in pod["args"]
    assert "--load-model=act" in pod["args"] and pod["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert all("value" not in e for e in pod["env"] if e["name"].startswith("AWS_") and "KEY" in e["name"])
    assert docs[2]["spec"]["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_us_per_request"
    again = CliRunner().invoke(app, ["k8s", "--repo", "s3://robots/models", "-m", "act", "-o", str(out)])
    assert again.exit_code == 2  # no clobbering without --force


def test_the_validation_can_fail():
    """The schemas really are applied: a misspelled field and a wrong type are each refused."""
    from policy_export.errors import BadInputError
    from policy_export.fleet.k8s import K8sPlan, manifests, validate

    docs = manifests(K8sPlan(repo="s3://robots/models", models=("act",)))
    validate(docs)
    typo = copy.deepcopy(docs)
    typo[0]["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(BadInputError, match="Deployment policy-triton: fails the Kubernetes"):
        validate(typo)
    wrong = copy.deepcopy(docs)
    wrong[2]["spec"]["minReplicas"] = "two"
    with pytest.raises(BadInputError, match="HorizontalPodAutoscaler"):
        validate(wrong)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--repo", "/srv/models"], "object storage"),
        (["--repo", "s3://r/m", "--name", "Bad_Name"], "--name"),
        (["--repo", "s3://r/m", "--min-replicas", "3", "--replicas", "2"], "--min-replicas"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    res = CliRunner().invoke(app, ["k8s", "-m", "act", "-o", str(tmp_path / "x.yaml"), *args])
    assert res.exit_code == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "x.yaml").exists()
