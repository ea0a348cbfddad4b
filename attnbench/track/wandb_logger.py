"""Weights & Biases, imported only when a run uses it (it costs about a second at import).

``logger.mode=auto`` runs online when the user is logged in (WANDB_API_KEY or a netrc entry) and offline
otherwise; offline runs can be pushed later with ``wandb sync <run dir>/wandb/offline-run-*``. If W&B is
unreachable or misconfigured, training goes on offline after one warning.
"""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import console


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(timeout: float = 5.0) -> str | None:
    """None when the W&B server accepts a connection, else why not (W&B itself retries for minutes)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"{url.hostname}:{port} unreachable: {e.strerror or e}"
    return None


def resolve_mode(mode: str) -> str:
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.mode must be auto, online, offline or disabled, not {mode!r}")
    if mode == "auto":
        return "online" if _logged_in() else "offline"
    return mode


class Logger:
    """The logger every run has: W&B calls go nowhere when W&B is off."""

    run_id: str | None = None

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_images(self, images: dict[str, Path], step: int) -> None: ...

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def set_summary(self, values: dict[str, Any]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class WandbLogger(Logger):
    def __init__(self, *, mode: str, project: str, entity: str | None, run_dir: Path, name: str, group: str,
                 tags: list[str], config: dict[str, Any], run_id: str | None = None) -> None:
        import wandb

        self._wandb = wandb
        kwargs = dict(project=project, entity=entity, dir=str(run_dir), name=name, group=group, tags=tags,
                      config=config, id=run_id, resume="allow" if run_id else None, reinit="finish_previous",
                      settings=wandb.Settings(silent=True))  # attnbench prints its own one-line note
        problem = _reachable() if mode == "online" else None
        if problem is None:
            try:
                self.run = wandb.init(mode=mode, **kwargs)
            except Exception as e:  # bad key, bad entity, server error: keep training, log offline
                if mode != "online":
                    raise
                problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        if problem is not None:
            console.warn(f"W&B online failed ({problem}); logging offline instead, push later with `wandb sync`")
            self.run = wandb.init(mode="offline", **kwargs)
        self.run_id = self.run.id
        where = self.run.url if self.run.settings.mode == "online" else \
            f"offline in {self.run.dir.rsplit('/files', 1)[0]} (push with `wandb sync`)"
        console.info(f"W&B run {self.run_id}: {where}")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_images(self, images: dict[str, Path], step: int) -> None:
        """Figures: PNG as images, HTML (shaded text) as HTML panels."""
        media = {key: self._wandb.Html(path.read_text()) if path.suffix == ".html" else self._wandb.Image(str(path))
                 for key, path in images.items()}
        self.run.log(media, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    def set_summary(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def create_logger(cfg: Any, *, run_dir: Path, name: str, group: str, tags: list[str], config: dict[str, Any],
                  run_id: str | None = None) -> Logger:
    """``cfg`` is the ``logger`` config node: ``name`` wandb | none, ``mode``, ``project``, ``entity``."""
    if cfg.name == "none":
        return Logger()
    mode = resolve_mode(cfg.mode)
    if mode == "disabled":
        return Logger()
    return WandbLogger(mode=mode, project=cfg.project, entity=cfg.entity, run_dir=run_dir, name=name,
                       group=group, tags=[*tags, *cfg.tags], config=config, run_id=run_id)
