"""``python -m attnbench`` (what torchrun starts): the same command line as ``attnbench``."""

import sys

from .cli import main

sys.exit(main())
