"""The one exception for a user's mistake, and how the commands report it.

A `UsageError` says what is wrong (the flag, file or value) and how to fix it.
The entry points (`python -m tfvae.train`, `.evaluate`, `.export`) print its
message without a traceback; a traceback is for bugs only. It is a
`ValueError`, so Python callers can catch it as one.
"""

import functools

from absl import app


class UsageError(ValueError):
    """Bad input from a user: a flag, a file, a run directory or an export."""


def reported(main):
    """Returns `main` reporting a `UsageError` as absl does: no traceback."""

    @functools.wraps(main)
    def wrapper(argv):
        try:
            return main(argv)
        except UsageError as e:
            raise app.UsageError(str(e)) from None

    return wrapper
