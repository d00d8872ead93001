"""One exception type for every user-facing problem, so the CLI can print one clear line."""


class DtdError(Exception):
    """A problem with the user's input (file, config, environment); the message names source and problem."""
