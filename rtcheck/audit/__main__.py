"""``python -m rtcheck.audit`` is ``rtcheck audit``."""

import sys

from .run import main

sys.exit(main())
