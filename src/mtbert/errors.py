"""The exception types for what stops a command: the CLI prints the message and exits with the error's code."""


class MtbertError(ValueError):
    """A problem with a file, flag or value the user gave; the message names it and says what to do (exit code 2)."""

    exit_code = 2


class Interrupted(MtbertError):
    """Work stopped by the user (Ctrl-C) that the same command resumes; the message says where it stands."""

    exit_code = 130
