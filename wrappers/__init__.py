"""Stateless policy cores, one module per policy family.

These modules depend on torch alone: they take an already-built policy network plus
its normalization statistics and expose a pure ``forward(state, *images) -> action_chunk``
that exporters (ONNX, TorchScript, TensorRT) can trace without dragging the policy's
runtime state (action queues, ensemblers, VAE training branch) into the graph.
"""
