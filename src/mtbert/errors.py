"""The one exception type for bad user input: the CLI prints its message and exits with code 2."""


class MtbertError(ValueError):
    """A problem with a file, flag or value the user gave; the message names it and says what to do."""
