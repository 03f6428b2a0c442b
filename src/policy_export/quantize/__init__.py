"""``policy-export quantize``: bf16 and int8 CPU artifacts from an fp32 ONNX one, calibrated and measured.

fp32 ONNX Runtime already runs at the FLOP floor of an AVX-512 CPU (FACTS.md); what is left is
fewer bits per operand. The pieces: :mod:`.calibration` (frames that look like frames, or a
LeRobotDataset's own), :mod:`.dataset` (reading one), :mod:`.backends` (OpenVINO/NNCF and ONNX
Runtime QDQ) and :mod:`.run` (checks, measurement, metadata, atomic publication).
"""
