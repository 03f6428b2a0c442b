"""Examples shown under every command's ``--help`` (the Examples section), one place for all of them.

Why one module: ``tests/test_cli_friction.py`` parses every line here with the command's own parser,
so an example that names an option that was renamed or removed fails the suite instead of a user.
Paths are the README's (``DIR`` is a ``pretrained_model`` folder).
"""

from __future__ import annotations

EXAMPLES: dict[str, list[str]] = {
    "inspect": [
        "policy-export inspect --checkpoint outputs/train/act/checkpoints/last/pretrained_model",
        "policy-export inspect -c DIR --json",
        "policy-export inspect --artifact smolvla.onnx",
    ],
    "onnx": [
        "policy-export onnx --checkpoint DIR --output policy.onnx",
        "policy-export onnx -c DIR -o policy-fp16.onnx --precision fp16 --force",
    ],
    "verify": [
        "policy-export verify --checkpoint DIR --artifact policy.onnx --report parity.json --junit parity.xml",
        "policy-export verify -c DIR -a policy.onnx -a policy.pt --batch-sizes 1,4 --rollout 50",
    ],
    "eval": [
        "policy-export eval --checkpoint DIR --artifact policy.onnx --artifact policy.pt --env pusht --episodes 5 --report eval.json",
        "policy-export eval -c DIR -a policy.onnx --env pusht --client realtime --latency-steps 0,1,3,10 --plot latency.png",
        "policy-export eval -c DIR -a policy.onnx --env pusht --episodes 2 --steps 100 --video videos",
        "policy-export eval -c DIR -a policy.onnx --env pusht --client triton --triton-url 127.0.0.1:8001 --triton-model act",
    ],
    "torchscript": [
        "policy-export torchscript --checkpoint DIR --output policy.pt",
        "policy-export torchscript -c DIR --output policy-uint8.pt --image-format uint8",
    ],
    "tensorrt": [
        "policy-export tensorrt --onnx policy.onnx --output policy.plan --precision fp16 --max-batch 16",
    ],
    "quantize": [
        "policy-export quantize --checkpoint DIR --artifact policy.onnx --precision int8 --output policy-int8.onnx",
        "policy-export quantize -c DIR -a policy.onnx --precision bf16 --output policy-bf16.xml",
        "policy-export quantize -c DIR -a policy.onnx --precision int8 --runtime openvino --calibration DATASET_DIR -o policy-int8.xml",
    ],
    "export": [
        "policy-export export --checkpoint DIR --out-dir artifacts --formats onnx,torchscript",
        "policy-export export -c DIR --out-dir artifacts --formats onnx,tensorrt --allow-unavailable",
    ],
    "demo": [
        "policy-export demo",
        "policy-export demo --family diffusion --out-dir demo-output",
    ],
    "triton-repo": [
        "policy-export triton-repo --artifact policy.onnx --repo model_repository --model act --version 1",
        "policy-export triton-repo -a policy.onnx --repo model_repository --model act --backend python --force",
        "policy-export triton-repo --check model_repository",
    ],
    "bench": [
        "policy-export bench --checkpoint DIR --artifact policy.onnx --batch-sizes 1,8 --json bench.json --plot bench.png",
    ],
    "bench-shim": [
        "policy-export bench-shim --json bench-shim.json",
    ],
    "k8s": [
        "policy-export k8s --repo s3://robots/models --model act --output triton.yaml",
    ],
    "upgrade": [
        "policy-export upgrade --triton-url 127.0.0.1:8001,127.0.0.1:8004 --model act --version 2 --repo s3://robots/models",
    ],
    "serve": [
        "policy-export serve --repo model_repository",
        "policy-export serve --repo s3://robots/models --s3-endpoint http://127.0.0.1:9000 --replicas 2",
        "policy-export serve --repo model_repository --grpc-port 9001 --http-port 9000 --metrics-port 9002",
    ],
    "bench-triton": [
        "policy-export bench-triton --artifact policy.onnx --json triton-latency.json",
    ],
    "bench-fleet": [
        "policy-export bench-fleet --repo model_repository --model act --robots 1,2,4,8 --json fleet.json",
        "policy-export bench-fleet --triton-url 127.0.0.1:8001 --model act --sweep 1,2,4,8",
        'policy-export bench-fleet --repo model_repository --model smolvla --robots 1,2 --task "open the drawer"',
    ],
    "bench-realtime": [
        "policy-export bench-realtime --artifact policy.onnx --fps 30 --steps 3000 --json realtime.json",
        "policy-export bench-realtime --artifact policy.onnx --triton-url 127.0.0.1:8001 --model act",
    ],
}


def epilog(command: str) -> str:
    """The Examples section of ``command``'s help (Typer's rich help keeps lines apart with blank lines)."""
    return "[bold]Examples[/]\n\n" + "\n\n".join(f"  $ {line}" for line in EXAMPLES[command])
