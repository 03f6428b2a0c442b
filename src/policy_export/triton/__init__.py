"""Triton model repositories: generate, version, validate offline, and serve for tests.

- :mod:`policy_export.triton.config`: a ``config.pbtxt`` built from an artifact's real signature,
  from :mod:`.backends` (which Triton backend serves which artifact), :mod:`.signature` (the
  tensors on the wire), :mod:`.options` (serving settings) and :mod:`.schema` (Triton's schema).
- :mod:`policy_export.triton.repo`: versioned, atomic writes into a model repository.
- :mod:`policy_export.triton.validate`: the offline check run after every write and by ``--check``
  (:mod:`.version_check`: what it checks in each version folder).
- :mod:`policy_export.triton.install`: find the ``tritonserver`` shipped in the nvidia-pytriton
  wheel (CPU, Python backend only) and prepare its backends and environment;
  :mod:`policy_export.triton.server` launches it for tests and local trials.

Everything heavy (onnx, tritonclient's protobuf schema) is imported inside functions.
"""
