"""``python -m rtcheck`` is the ``rtcheck`` command."""

from .cli import run

run()
