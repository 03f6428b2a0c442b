"""Files that ``policy-export triton-repo`` writes into Triton model repositories.

Shipped as package data (``policy_export_triton_templates``) and read with
``importlib.resources``; nothing here is imported by policy-export itself. The ``.py`` files
run inside Triton's Python-backend stub, in the server's own environment (numpy,
onnxruntime), never in the exporter's.
"""
