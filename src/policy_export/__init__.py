"""policy-export: stateless, verified exports of LeRobot policies.

Kept import-light on purpose: ``policy-export --help`` and the robot-side runtime shim
must not pay for torch or lerobot imports.
"""

__version__ = "0.1.0"
