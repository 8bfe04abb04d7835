"""``python -m lecl_transforms`` = the ``lecl`` command."""

import sys

from .tools.cli import main

sys.exit(main())
