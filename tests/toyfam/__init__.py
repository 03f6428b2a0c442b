"""A policy family that exists only in the tests (see tests/test_fake_family.py and docs/families.md).

LeRobot side: a plugin policy ``toyfam`` (``configuration_toyfam`` / ``modeling_toyfam``, found by
LeRobot's own naming convention) whose chunk is a linear map of the normalized state, plus the mean
of each normalized camera, plus ``gain`` times a noise sample the caller passes. policy-export side:
:mod:`toyfam.family` (a declaration with a ``NOISE`` input and no history, which neither ACT nor
Diffusion has, and a toolchain half with a tiny torch core).
"""
