"""The lipstream server: ring buffer, session pipeline, multiplexer, gRPC servicer."""
