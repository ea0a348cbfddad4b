"""Hydra instantiates sweepers only from the ``hydra_plugins`` namespace: attnbench's sequential sweeper
(``attnbench/sweeper.py``) is named here for ``conf/hydra/sweeper/decide.yaml``."""

from attnbench.sweeper import DecideSweeper as _DecideSweeper


class DecideSweeper(_DecideSweeper):
    """``hydra/sweeper=decide``: see ``attnbench.sweeper``."""
