"""`python -m lipstream.server [flags]` is `lipstream serve [flags]`."""

import sys

from lipstream.server.main import main

sys.exit(main())
