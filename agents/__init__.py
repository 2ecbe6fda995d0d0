"""Split-point agents; importable as ``splitrl.agents``."""
