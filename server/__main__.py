"""`python -m lipstream.server [flags]` is `lipstream serve [flags]`."""

import sys

from lipstream.__main__ import quiet_grpc_core

quiet_grpc_core()

from lipstream.server.main import main  # noqa: E402  (grpc reads GRPC_VERBOSITY when it is imported)

sys.exit(main())
