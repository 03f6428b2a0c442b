"""LeRobot's feature keys for the robot state, the environment state and the action.

In a module of their own because the loader, the diagnoses and the family modules all name
them, and none of those should import another just for three strings.
"""

STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
ACTION_KEY = "action"
