"""Generated gRPC code for the lipstream.v1 contract (see lipstream.proto; regenerate with `make proto`)."""
