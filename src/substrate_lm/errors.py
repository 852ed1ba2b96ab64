"""One exception type for bad user input.

Raise :class:`SubstrateError` with a one-line message that names the problem and the fix; the CLI
prints it as ``error: <message>`` and exits with status 2, never with a traceback.

Anything else that escapes a command is a bug (or a failing system call): ``substrate_lm.cli.main``
prints it on one line as ``error: internal error: ...`` (exit 1); ``SUBSTRATE_LM_DEBUG=1`` shows the
traceback. Validate user input up front and raise this class instead of relying on that backstop.
"""


class SubstrateError(Exception):
    """A user-facing error: bad input, a missing file, a mismatch. The message is one line."""
