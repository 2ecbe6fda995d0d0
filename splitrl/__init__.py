"""splitrl: decide online where to split a transformer LM between a user device and an edge server."""
__version__ = "0.1.0"
