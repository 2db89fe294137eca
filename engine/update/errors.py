"""The update's one expected failure type, light to import (the CLI catches it for every command)."""


class UpdateError(Exception):
    """The update installed nothing; one line saying why (the last good index stays)."""
