"""Generated protobuf and gRPC modules for ``baton.v1`` (see tools/generate_stubs.py)."""
