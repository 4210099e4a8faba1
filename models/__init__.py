"""Models: torch and numpy only, never grpc."""
