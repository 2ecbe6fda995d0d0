"""Split-point environments (Gymnasium); importable as ``splitrl.envs``."""
