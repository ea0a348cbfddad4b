"""The one exception type for things a user got wrong; the CLI prints its message as one line, exit 2."""

import argparse
from typing import NoReturn


class UserError(Exception):
    """A problem in the user's input (config, data, paths, checkpoints) with a message that says how to fix it."""


class CommandParser(argparse.ArgumentParser):
    """argparse for a subcommand (``prog="attnbench eval"``): ``--help`` as argparse prints it, and a bad
    argument as one UserError line naming ``--help`` instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("attnbench ")
        raise UserError(f"{command}: {message} (`{self.prog} --help` lists the options)")
