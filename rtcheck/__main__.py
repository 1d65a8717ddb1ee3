"""``python -m rtcheck`` is the ``rtcheck`` command."""

import sys

from .cli import main

sys.exit(main())
