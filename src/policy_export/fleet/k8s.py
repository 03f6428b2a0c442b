"""Kubernetes manifests for Triton replicas serving a repository in object storage.

What is written, and why:

- a **Deployment** of tritonserver (the NGC image whose server version the configs are written
  and checked for) reading ``s3://...`` directly, in explicit model control mode so that
  ``policy-export upgrade`` rolls versions out through the load API pod by pod; AWS credentials
  come from a Secret (never written into the manifest); readiness is Triton's
  ``/v2/health/ready`` (``--strict-readiness``: every model loaded), so a Service never sends a
  robot to a pod still loading; ``maxUnavailable: 0`` for changes to the pod itself;
- a **Service** (ClusterIP) with the HTTP, gRPC and metrics ports;
- a **HorizontalPodAutoscaler** (``autoscaling/v2``) on Triton's queue time per request, the
  signal that a replica is full (its compute time per request is flat until it queues). The HPA
  reads it as a per-pod custom metric, which needs a metrics adapter (e.g. prometheus-adapter)
  turning ``nv_inference_queue_duration_us`` / ``nv_inference_request_success`` into
  :data:`QUEUE_METRIC`; the rule is in the README.

Nothing here talks to a cluster: :func:`validate` checks the documents against the Kubernetes
OpenAPI schemas bundled with ``kubernetes-validate`` (offline, strict: unknown fields refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from policy_export.errors import BadInputError, UnavailableError

#: The NGC release carrying tritonserver 2.51, the server version configs are checked against.
DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
#: The per-pod custom metric the HPA scales on (exposed by a metrics adapter, see the README).
QUEUE_METRIC = "triton_queue_us_per_request"
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class K8sPlan:
    repo: str  # s3://bucket/prefix (or Triton's s3://host:port/bucket/prefix)
    models: tuple[str, ...]
    name: str = "policy-triton"
    namespace: str | None = None
    image: str = DEFAULT_IMAGE
    replicas: int = 2
    min_replicas: int = 2
    max_replicas: int = 8
    queue_target_us: int = 20_000
    secret: str = "policy-triton-s3"
    region: str = "us-east-1"
    cpu: str = "2"
    memory: str = "4Gi"
    gpus: int = 0

    def __post_init__(self) -> None:
        if not self.repo.startswith("s3://"):
            raise BadInputError(
                f"--repo {self.repo}: pods read the repository from object storage; give s3://bucket/prefix "
                "(publish with `policy-export triton-repo --repo s3://...`)"
            )
        if not _NAME.fullmatch(self.name) or len(self.name) > 50:
            raise BadInputError(f"--name {self.name!r}: a Kubernetes name (lowercase letters, digits, '-'; <= 50)")
        if not self.models:
            raise BadInputError("--model: name at least one model to load")
        if not 1 <= self.min_replicas <= self.replicas <= self.max_replicas:
            raise BadInputError(
                f"replicas: need 1 <= --min-replicas ({self.min_replicas}) <= --replicas ({self.replicas}) "
                f"<= --max-replicas ({self.max_replicas})"
            )
        if self.queue_target_us < 1:
            raise BadInputError(f"--queue-target-us {self.queue_target_us}: give microseconds >= 1")


def manifests(plan: K8sPlan) -> list[dict[str, Any]]:
    """Deployment, Service and HorizontalPodAutoscaler, as plain dicts (YAML/JSON-ready)."""
    labels = {"app.kubernetes.io/name": plan.name, "app.kubernetes.io/component": "triton"}
    meta: dict[str, Any] = {"name": plan.name, "labels": labels}
    if plan.namespace:
        meta["namespace"] = plan.namespace
    args = [
        f"--model-repository={plan.repo}",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in plan.models),
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--allow-metrics=true",
    ]
    secret = {"name": plan.secret}
    env = [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {**secret, "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {**secret, "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "AWS_DEFAULT_REGION", "value": plan.region},
    ]
    resources: dict[str, Any] = {
        "requests": {"cpu": plan.cpu, "memory": plan.memory},
        "limits": {"memory": plan.memory},
    }
    if plan.gpus:
        resources["limits"]["nvidia.com/gpu"] = plan.gpus
    probe = {"port": "http", "path": "/v2/health/ready"}
    container = {
        "name": "tritonserver",
        "image": plan.image,
        "command": ["tritonserver"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": 8000, "protocol": "TCP"},
            {"name": "grpc", "containerPort": 8001, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 8002, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": probe, "periodSeconds": 2, "failureThreshold": 3},
        "startupProbe": {"httpGet": probe, "periodSeconds": 5, "failureThreshold": 60},
        "livenessProbe": {"httpGet": {"port": "http", "path": "/v2/health/live"}, "periodSeconds": 10},
        "resources": resources,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": plan.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8002"},
                },
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 30},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [
                {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": 8001, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": 8002, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": plan.name},
            "minReplicas": plan.min_replicas,
            "maxReplicas": plan.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": QUEUE_METRIC},
                        "target": {"type": "AverageValue", "averageValue": str(plan.queue_target_us)},
                    },
                }
            ],
            # A new pod needs its model loaded before it helps: scale up at once, down slowly.
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {"stabilizationWindowSeconds": 300},
            },
        },
    }
    return [deployment, service, hpa]


def validate(docs: list[dict[str, Any]], kubernetes_version: str | None = None) -> str:
    """Check every document against the Kubernetes OpenAPI schema (strict, offline); the version used."""
    try:
        import kubernetes_validate
        from kubernetes_validate import utils
    except ImportError as exc:
        raise UnavailableError(
            f"validation needs kubernetes-validate: pip install kubernetes-validate ({exc})"
        ) from None
    version = kubernetes_version or utils.latest_version()
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in getattr(exc, "path", []) or [])
            raise BadInputError(
                f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}: fails the Kubernetes {version} schema at "
                f"{path or '/'}: {str(exc).splitlines()[0]}"
            ) from None
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            raise BadInputError(f"no offline Kubernetes schema for {version} ({exc})") from None
    return version


def to_yaml(docs: list[dict[str, Any]]) -> str:
    import yaml

    class Plain(yaml.SafeDumper):
        """No anchors/aliases for the label maps the documents share: plain YAML a reviewer reads."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    return "---\n".join(yaml.dump(d, Dumper=Plain, sort_keys=False) for d in docs)
