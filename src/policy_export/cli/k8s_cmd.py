"""``policy-export k8s``: Deployment + Service + HorizontalPodAutoscaler for Triton on an s3:// repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from policy_export.cli.common import ForceOpt, console, handle_errors


@handle_errors
def k8s(
    repo: Annotated[str, typer.Option("--repo", help="The repository in object storage: s3://bucket/prefix.")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Model to load at start (repeat for several).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The manifests file to write (YAML, three documents).")
    ],
    name: Annotated[str, typer.Option(help="Name of the Deployment, Service and HPA.")] = "policy-triton",
    namespace: Annotated[str | None, typer.Option(help="Namespace (default: kubectl's).", show_default=False)] = None,
    image: Annotated[str, typer.Option(help="tritonserver image (the configs are checked for server 2.51).")] = (
        "nvcr.io/nvidia/tritonserver:24.10-py3"
    ),
    replicas: Annotated[int, typer.Option(help="Replicas at start.")] = 2,
    min_replicas: Annotated[int, typer.Option(help="HPA minimum.")] = 2,
    max_replicas: Annotated[int, typer.Option(help="HPA maximum.")] = 8,
    queue_target_us: Annotated[
        int, typer.Option(help="HPA target: average Triton queue time per request, microseconds, per pod.")
    ] = 20_000,
    secret: Annotated[
        str, typer.Option(help="Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (created by you).")
    ] = "policy-triton-s3",
    region: Annotated[str, typer.Option(help="AWS_DEFAULT_REGION for the pods.")] = "us-east-1",
    cpu: Annotated[str, typer.Option(help="CPU request per pod.")] = "2",
    memory: Annotated[str, typer.Option(help="Memory request and limit per pod.")] = "4Gi",
    gpus: Annotated[int, typer.Option(help="nvidia.com/gpu per pod (0: CPU).")] = 0,
    kubernetes_version: Annotated[
        str | None,
        typer.Option(help="Kubernetes schema version to validate against (default: the newest bundled)."),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Write Kubernetes manifests for Triton replicas loading MODEL from an s3:// repository, validated offline against the Kubernetes OpenAPI schemas.

    Nothing is applied: apply them with kubectl. The HPA scales on a per-pod custom metric from Triton's queue time (needs a metrics adapter; see the README). Versions are rolled out with `policy-export upgrade` (explicit model control).
    """
    from policy_export.fleet.k8s import K8sPlan, manifests, to_yaml, validate
    from policy_export.fsutil import atomic_output

    plan = K8sPlan(
        repo=repo,
        models=tuple(model),
        name=name,
        namespace=namespace,
        image=image,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        queue_target_us=queue_target_us,
        secret=secret,
        region=region,
        cpu=cpu,
        memory=memory,
        gpus=gpus,
    )
    docs = manifests(plan)
    version = validate(docs, kubernetes_version)
    with atomic_output(output, force, "manifests") as tmp:
        tmp.write_text(to_yaml(docs))
    kinds = ", ".join(d["kind"] for d in docs)
    console.print(
        f"[green]wrote[/] {output}: {kinds}; valid against the Kubernetes {version} schemas (offline, strict)"
    )
