"""Data sets from the Hugging Face hub, through ``datasets`` (imported only when a hub set is used)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError
from .cache import files_signature


def load_hub(hub_id: str, instead: str) -> Any:
    """``datasets.load_dataset(hub_id)``. A failure (no network, no such set) ends with one line that says
    what the user can do ``instead`` (a local copy, another data config)."""
    import datasets

    try:
        return datasets.load_dataset(hub_id)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load {hub_id!r} from the Hugging Face hub ({first}); check the network, or "
                        f"{instead}") from e


def check_columns(split: Any, hub_id: str, columns: Iterable[str], fix: str = "") -> None:
    """Refuse a split that lacks one of ``columns``, naming the columns it has (and ``fix``, how to choose)."""
    for column in columns:
        if column not in split.column_names:
            raise UserError(f"{hub_id} has no column {column!r}; its columns are {', '.join(split.column_names)}"
                            + (f" ({fix})" if fix else ""))


def hub_key(ds: Any, hub_id: str, split: str, *columns: str) -> dict[str, Any] | None:
    """What the decoded images of a hub split depend on, for the decode cache: the set, split and columns, the
    split's ``datasets`` fingerprint and the Arrow files it was read from (path, size, modification time), which
    a new revision or a fresh download replaces. None for a split held only in memory (nothing to key on)."""
    files = [Path(f["filename"]) for f in getattr(ds, "cache_files", None) or []]
    if not files:
        return None
    return {"hub_id": hub_id, "split": split, "columns": list(columns), "rows": len(ds),
            "fingerprint": getattr(ds, "_fingerprint", None), "files": files_signature(files)}
