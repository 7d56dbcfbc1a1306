"""Errors that segexp reports to the user as one line, without a traceback."""


class SegexpError(Exception):
    """A problem with the user's input (config, files, services) that the user can fix."""


class ConfigError(SegexpError):
    """A composed config value that is not allowed; the message names the key, value and rule."""
