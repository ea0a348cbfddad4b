"""Weights & Biases, imported only when a run uses it (it costs about a second at import).

Each setting comes from, in this order: an explicit ``logger.*`` override on the command line, then W&B's own
environment (``WANDB_MODE``, ``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_RUN_GROUP``, ``WANDB_TAGS``,
``WANDB_NAME``, ``WANDB_DIR``; ``WANDB_BASE_URL`` is read by W&B itself), then the config file or attnbench's
automatic value. ``logger.mode=auto`` runs online when wandb's own credentials lookup finds a key for the
server (``WANDB_API_KEY``, a netrc entry for ``WANDB_BASE_URL``'s host) and offline otherwise. If W&B is
unreachable or misconfigured, training goes on offline after one warning.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import console

MODES = ("auto", "online", "offline", "disabled")
# WANDB_MODE's own spellings: W&B accepts the old "dryrun" and "run", and "shared" (online, several writers)
ENV_MODES = {"online": "online", "run": "online", "shared": "online", "offline": "offline", "dryrun": "offline",
             "disabled": "disabled"}
CHECKPOINTS = ("none", "best", "last", "all")


def _logged_in() -> bool:
    """Whether wandb finds credentials for the server it would talk to (WANDB_BASE_URL or the public one)."""
    import wandb
    from wandb.sdk.lib import wbauth

    try:
        auth = wbauth.authenticate_session(host=wandb.setup().settings.base_url, source="attnbench",
                                           prompt=False, update_session=False)
    except Exception:  # a malformed key: go online, where W&B's refusal becomes the offline fallback's warning
        return True
    return auth is not None


def _reachable(timeout: float = 5.0) -> str | None:
    """None when the W&B server accepts a connection, else why not (W&B itself retries for minutes)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"{url.hostname}:{port} unreachable: {e.strerror or e}"
    return None


def explicit_keys(overrides: Iterable[str]) -> set[str]:
    """The config keys a command line sets (``logger.project=x``, ``+logger.group=y`` -> ``logger.project``...)."""
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides if "=" in o}


def wanted_mode(cfg: Any, explicit: set[str]) -> str:
    """auto | online | offline | disabled before the login check: logger.mode from the command line, else
    WANDB_MODE (a misspelt one is warned about and ignored), else the config's logger.mode."""
    mode = cfg.mode
    env = os.environ.get("WANDB_MODE")
    if env and "logger.mode" not in explicit:
        if env.lower() in ENV_MODES:
            mode = ENV_MODES[env.lower()]
        else:
            near = difflib.get_close_matches(env.lower(), list(ENV_MODES), n=1)
            console.warn(f"WANDB_MODE={env} is not a W&B mode{f' (did you mean {near[0]}?)' if near else ''}; "
                         f"using logger.mode={cfg.mode}")
            del os.environ["WANDB_MODE"]  # W&B's own settings would refuse to start with it
    if mode not in MODES:
        raise ValueError(f"logger.mode must be auto, online, offline or disabled, not {mode!r}")
    return mode


def resolve_mode(cfg: Any, explicit: set[str] = frozenset()) -> str:
    """online | offline | disabled, as the run will log."""
    if cfg.get("name", "wandb") == "none":
        return "disabled"
    mode = wanted_mode(cfg, explicit)
    if mode == "auto":
        return "online" if _logged_in() else "offline"
    return mode


def _setting(cfg: Any, key: str, env: str, explicit: set[str], automatic: Any = None) -> Any:
    if f"logger.{key}" in explicit:
        return cfg.get(key)
    if os.environ.get(env):
        return os.environ[env]
    value = cfg.get(key)
    return automatic if value is None else value


PROJECT_FORBIDS = "/\\#?%:"  # W&B's own check of a project name (wandb_settings), and its 128 characters
MAX_TAG = 64  # characters in a W&B tag


def _user_tags(cfg: Any, explicit: set[str]) -> tuple[list[str], str]:
    """The tags the user adds to attnbench's own, and where they come from: logger.tags from the command
    line, else WANDB_TAGS, else the config's."""
    env_tags = [t.strip() for t in os.environ.get("WANDB_TAGS", "").split(",") if t.strip()]
    if "logger.tags" in explicit or not env_tags:
        return list(cfg.tags), "logger.tags"
    return env_tags, "WANDB_TAGS"


def check_settings(cfg: Any, explicit: set[str] = frozenset()) -> None:
    """Refuse (UserError) the W&B settings a run would fail on only after its directory exists: a project,
    entity or group W&B cannot name (from logger.* or WANDB_*), an empty or too long tag, a WANDB_DIR
    that cannot be written. Nothing when W&B is off."""
    from ..errors import UserError

    if cfg.get("name", "wandb") == "none" or wanted_mode(cfg, explicit) == "disabled":
        return
    for key, env in (("project", "WANDB_PROJECT"), ("entity", "WANDB_ENTITY"), ("group", "WANDB_RUN_GROUP")):
        value = _setting(cfg, key, env, explicit)
        where = f"logger.{key}" if f"logger.{key}" in explicit or not os.environ.get(env) else env
        forbidden = PROJECT_FORBIDS if key == "project" else "/"
        if value is not None and (not str(value).strip() or any(c in str(value) for c in forbidden)
                                  or len(str(value)) > 128):
            raise UserError(f"{where}={value!r}: W&B refuses it (a {key} name has 1 to 128 characters, none "
                            f"of {' '.join(forbidden)})")
    tags, source = _user_tags(cfg, explicit)
    for tag in tags:
        if not str(tag).strip() or len(str(tag)) > MAX_TAG:
            raise UserError(f"{source}: the tag {str(tag)!r} has {len(str(tag))} characters; W&B takes 1 to "
                            f"{MAX_TAG}")
    if os.environ.get("WANDB_DIR"):
        where = Path(os.environ["WANDB_DIR"]).expanduser().absolute()
        existing = next((p for p in (where, *where.parents) if p.exists()), where)
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"WANDB_DIR={os.environ['WANDB_DIR']}: {existing} is not a folder this process can "
                            f"write to; point WANDB_DIR at one (or unset it: W&B then writes into the run directory)")


class Logger:
    """The logger every run has: W&B calls go nowhere when W&B is off."""

    run_id: str | None = None

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_images(self, images: dict[str, Path], step: int) -> None: ...

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def log_checkpoints(self, paths: dict[str, Path]) -> None: ...

    def set_summary(self, values: dict[str, Any]) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class WandbLogger(Logger):
    def __init__(self, *, mode: str, settings: dict[str, Any], config: dict[str, Any],
                 primary: tuple[str, bool] | None = None, run_id: str | None = None,
                 run_dir: Path | None = None) -> None:
        import wandb

        self._wandb = wandb
        kwargs = dict(**settings, config=config, id=run_id, resume="allow" if run_id else None,
                      reinit="finish_previous", settings=wandb.Settings(silent=True))  # attnbench prints its note
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
        # epoch metrics are charted against the epoch; per-step ones (step/*) against W&B's own step
        self.run.define_metric("epoch")
        for pattern in ("train/*", "val/*"):
            self.run.define_metric(pattern, step_metric="epoch")
        if primary is not None:  # the best value so far, live on the dashboard (the final summary replaces it)
            name, higher = primary
            self.run.define_metric(name, step_metric="epoch", summary="max" if higher else "min")
        console.info(f"W&B run {self.run_id}: {self._where(run_dir)}")

    def _where(self, run_dir: Path | None) -> str:
        """The run's URL, or where its offline copy is: in the run directory's wandb/ by default, a line that
        fits 80 columns (the run directory is printed at the end)."""
        if self.run.settings.mode == "online":
            return self.run.url
        folder = Path(self.run.dir.rsplit("/files", 1)[0])
        if run_dir is not None and folder.parent.resolve() == (run_dir / "wandb").resolve():
            return "offline in the run's wandb/ folder (`wandb sync` pushes it)"
        return f"offline in {console.shown(folder)} (`wandb sync` pushes it)"

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_images(self, images: dict[str, Path], step: int) -> None:
        """Figures: PNG as images, HTML (shaded text) as HTML panels."""
        media = {key: self._wandb.Html(path.read_text()) if path.suffix == ".html" else self._wandb.Image(str(path))
                 for key, path in images.items()}
        self.run.log(media, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    def log_checkpoints(self, paths: dict[str, Path]) -> None:
        """One model artifact holding the given checkpoints, aliased by their names (best, last)."""
        artifact = self._wandb.Artifact(f"model-{self.run_id}", type="model")
        for name, path in paths.items():
            artifact.add_file(str(path), name=f"{name}.pt")
        self.run.log_artifact(artifact, aliases=sorted(paths))

    def set_summary(self, values: dict[str, Any]) -> None:
        # commit the open history row first: W&B writes it when the next step starts or at finish(), and its
        # values (the last epoch's val/*) would land in the summary after these
        self.run.log({}, commit=True)
        for key, value in values.items():
            self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


GROUP_MAX = 128  # W&B refuses a longer group


def fitted_group(text: str) -> str:
    """``text`` as a W&B group: itself up to W&B's 128 characters; a longer one (the paths and keys of a
    user's own data) cut, ending with a hash of the whole text, the same in every process: the seeds of a
    setting still share a group, and two settings never do."""
    if len(text) <= GROUP_MAX:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{text[:GROUP_MAX - len(digest) - 1]}~{digest}"


def create_logger(cfg: Any, *, run_dir: Path, name: str, group: str, tags: list[str], config: dict[str, Any],
                  job_type: str = "train", explicit: set[str] = frozenset(), primary: tuple[str, bool] | None = None,
                  run_id: str | None = None) -> Logger:
    """``cfg`` is the ``logger`` config node (``name`` wandb | none, ``mode``, ``project``, ``entity``,
    ``group``, ``tags``); ``name``, ``group`` and ``tags`` are attnbench's automatic values, ``explicit`` the
    config keys the command line set (they win over WANDB_*), ``primary`` the val metric to keep the best of."""
    mode = resolve_mode(cfg, explicit)
    if mode == "disabled":
        return Logger()
    extra, _ = _user_tags(cfg, explicit)
    settings = dict(
        project=_setting(cfg, "project", "WANDB_PROJECT", explicit),
        entity=_setting(cfg, "entity", "WANDB_ENTITY", explicit),
        group=_setting(cfg, "group", "WANDB_RUN_GROUP", explicit, automatic=group),
        name=os.environ.get("WANDB_NAME") or name,
        # absolute: a W&B service another process started (its id inherited in WANDB_SERVICE) resolves
        # relative paths against its own working directory
        dir=str(Path(os.environ.get("WANDB_DIR") or run_dir).resolve()),
        tags=list(dict.fromkeys([*tags, *extra])),
        job_type=job_type,
    )
    if settings["group"] and len(str(settings["group"])) > GROUP_MAX:
        config = {**config, "group": str(settings["group"])}  # the whole text, beside the group W&B can hold
        settings["group"] = fitted_group(str(settings["group"]))
    Path(settings["dir"]).mkdir(parents=True, exist_ok=True)
    return WandbLogger(mode=mode, settings=settings, config=config, primary=primary, run_id=run_id, run_dir=run_dir)
