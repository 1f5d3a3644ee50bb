"""The error types of every problem a user can fix; the CLI prints their message, no traceback."""


class ColorizeError(Exception):
    """Bad input or settings; the message names the file or setting and what to do."""


class Stopped(ColorizeError):
    """Work stopped on a signal, with what it had done saved; the CLI exits as the signal would
    have ended it."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class ConfigError(ColorizeError, ValueError):
    """A setting is unknown, mistyped or out of range; the message names it."""


def check_positive(key: str, value) -> None:
    """ConfigError unless setting ``key`` is None or positive."""
    if value is not None and value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def check_not_negative(key: str, value, note: str = "") -> None:
    """ConfigError if setting ``key`` is below 0; ``note`` says what 0 means, such as "off"."""
    if value < 0:
        raise ConfigError(f"{key} must be at least 0{f' ({note})' if note else ''}, got {value}")
