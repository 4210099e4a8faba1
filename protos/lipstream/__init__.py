"""lipstream: a gRPC streaming inference server for a 2D talking head."""

__version__ = "0.1.0"
