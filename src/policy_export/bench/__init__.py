"""Benchmarks of every backend against LeRobot's eager inference, and the machine's ceiling.

Each backend runs in its own worker process with its thread count fixed before torch or
ONNX Runtime is imported: two thread pools in one process on a small CPU fight each other
and make latencies bimodal, which would make the comparison meaningless.
"""
