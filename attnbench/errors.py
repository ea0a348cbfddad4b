"""The one exception type for things a user got wrong; the CLI prints its message as one line, exit 2."""


class UserError(Exception):
    """A problem in the user's input (config, data, paths, checkpoints) with a message that says how to fix it."""
