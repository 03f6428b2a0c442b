"""Closed-loop evaluation in LeRobot's simulators (``policy-export eval``).

LeRobot's eager policy and each exported artifact (through the robot runtime) drive the same
environment from the same seeds, built by LeRobot's own env factory; the per-step actions,
returns and outcomes are compared. :mod:`.envs` knows the environments, :mod:`.episodes`
runs one episode per policy, :mod:`.evaluate` compares, :mod:`.report` shows the result.
"""
