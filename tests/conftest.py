"""Shared test set-up: no network, W&B offline into temporary folders, caches kept out of the home folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from omegaconf import DictConfig

# Tests never touch the network and never write outside their temporary folders.
OFFLINE_ENV = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
    "MPLBACKEND": "Agg",
    # the models are tiny and pytest-xdist runs one test per core: a thread each keeps the cores from
    # being oversubscribed (the runs spawned by a test inherit it)
    "OMP_NUM_THREADS": "1",
}
os.environ.update(OFFLINE_ENV)
os.environ.pop("HYDRA_FULL_ERROR", None)
os.environ.pop("WANDB_API_KEY", None)
# pytest-xdist's workers set COLUMNS=80 and LINES=24, which the CLIs the tests run would read as the width of
# the reader (compare's table); a test that wants a width passes COLUMNS itself
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("HF_HOME", str(cache / "hf"))
    monkeypatch.delenv("WANDB_DIR", raising=False)  # attnbench respects it: runs would leave their run directory
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(cache / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(cache / "wandb-cache"))
    monkeypatch.setenv("HOME", str(cache / "home"))  # no netrc, so W&B is never "logged in"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache / "xdg"))  # the decode cache and glyphs: never the user's


@pytest.fixture
def compose() -> Iterator[Callable[..., DictConfig]]:
    """``compose("model=se", "data=cifar")``: a config composed as `attnbench train` composes it (with its Hydra
    node), through the one composition path the command line and bench use."""
    from attnbench.config import composer

    with composer("test") as compose_:
        yield lambda *overrides: compose_(overrides)


# Files whose tests run whole trainings and grids in subprocesses (20–60 s each). They go first, so that the two
# workers of `make test` start them early and end together on the short tests, instead of one worker finishing
# a long grid alone at the end.
LONG_FIRST = ("test_gpu_check.py", "test_reliability.py", "test_scale.py", "test_caption_task.py", "test_run_dir.py",
              "test_train.py", "test_sequential.py", "test_stream.py", "test_catalogue_cli.py", "test_rate_cli.py",
              "test_wandb.py", "test_output.py", "test_plugins.py", "test_run_cost.py", "test_fewshot.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)  # stable: the order within each part is kept
