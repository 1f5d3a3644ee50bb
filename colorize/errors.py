"""The error type of every problem a user can fix; the CLI prints its message, no traceback."""


class ColorizeError(Exception):
    """Bad input or settings; the message names the file or setting and what to do."""
