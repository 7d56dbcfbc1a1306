"""Errors that segexp reports to the user as one line, without a traceback, and the stop a
signal causes (a leaf: every package may import it)."""


class SegexpError(Exception):
    """A problem with the user's input (config, files, services) that the user can fix."""


class ConfigError(SegexpError):
    """A composed config value that is not allowed; the message names the key, value and rule."""


class Interrupted(Exception):
    """Training stopped on a signal after saving its state; `exit_code` is 128 + the signal."""

    def __init__(self, signal_name: str, exit_code: int, where: str) -> None:
        super().__init__(f"{signal_name}: training stopped {where}")
        self.signal_name, self.exit_code, self.where = signal_name, exit_code, where
