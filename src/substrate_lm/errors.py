"""One exception type for bad user input.

Raise :class:`SubstrateError` with a one-line message that names the problem and the fix; the CLI
prints it as ``error: <message>`` and exits with status 2, never with a traceback.
"""


class SubstrateError(Exception):
    """A user-facing error: bad input, a missing file, a mismatch. The message is one line."""
