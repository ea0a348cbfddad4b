"""What users see outside W&B: the files' modes, the terminal table's width."""

from __future__ import annotations

import os
from pathlib import Path


def test_files_honour_the_umask(tmp_path: Path) -> None:
    """summary.json and the checkpoints as open() would make them: 0644 under umask 022, 0600 under 077."""
    from attnbench.track import RunDirectory

    run = RunDirectory(tmp_path / "run")
    previous = os.umask(0o022)
    try:
        run.write_summary({"status": "completed"})
        run.save_checkpoint(run.last, {"step": 1})
        os.umask(0o077)
        run.save_checkpoint(run.best, {"step": 1})
    finally:
        os.umask(previous)
    assert [oct(p.stat().st_mode & 0o777) for p in (run.summary_path, run.last, run.best)] == ["0o644", "0o644",
                                                                                              "0o600"]


def test_compare_table_fits_80_100_and_120_columns(tmp_path: Path) -> None:
    """No cell cut to `…`, no line wider than the terminal; what was left out is said; a pipe stays wide."""
    from runner import attnbench
    from test_compare import write_sweep

    sweep = write_sweep(tmp_path)
    for columns in (80, 100, 120):
        out = attnbench("compare", str(sweep), cwd=tmp_path, env={"COLUMNS": str(columns)}, check=True).stdout
        assert "…" not in out and max(len(line) for line in out.splitlines()) <= columns, (columns, out)
        assert "0.9600 ± 0.0100" in out and "baseline" in out  # the primary metric and Δ always stay
    narrow = " ".join(attnbench("compare", str(sweep), cwd=tmp_path, env={"COLUMNS": "80"}).stdout.split())
    assert ("80 columns: left out vs, test, p, P(>), params, attn params, head params, FLOPs/sample, train samples/s, "
            "peak MB, wall s") in narrow  # the interval and the corrected p stay longest
    wide = attnbench("compare", str(sweep), cwd=tmp_path, check=True).stdout  # piped, no COLUMNS: every column
    assert "wall s" in wide and "left out" not in wide
