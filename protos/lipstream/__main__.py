"""The `lipstream` command (and `python -m lipstream`): lipstream.client.cli, run with gRPC's C-core logging
at ERROR unless GRPC_VERBOSITY says otherwise."""

from __future__ import annotations

import os
import sys


def quiet_grpc_core() -> None:
    """gRPC's C-core at ERROR unless GRPC_VERBOSITY says otherwise: its INFO lines (a failed TLS handshake's,
    on the client and the server) repeat in code what lipstream says in words. The core reads the variable
    once, when grpc is imported: call this first."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def main() -> int:
    quiet_grpc_core()
    from lipstream.client.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
