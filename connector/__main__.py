"""`python -m connector` runs the command line."""

from .cli import console

console()
