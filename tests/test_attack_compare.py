"""compare under attack: its inputs are data (types, finite numbers in range, nesting depth, YAML aliases, paths
with glob characters), it never writes into a run, and what it prints from files is text, never markup or
control. Run in-process (``run_compare``): each case costs milliseconds, not an interpreter start."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from test_compare import write_run

from attnbench.compare import run_compare
from attnbench.printable import printable


def compare(capsys, *args: str) -> tuple[int, str, str]:
    code = run_compare([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edit_summary(run: Path, change) -> None:
    summary = json.loads((run / "summary.json").read_text())
    change(summary)
    (run / "summary.json").write_text(json.dumps(summary))


def two_seeds(root: Path, **kw) -> list[Path]:
    return [write_run(root, model, seed, acc, **kw) for model, seed, acc in
            (("none", 0, 0.90), ("none", 1, 0.92), ("se", 0, 0.95), ("se", 1, 0.96))]


# ---------------------------------------------------------------------------------------- never into a run

@pytest.mark.parametrize("target", ["summary.json", "metrics.jsonl", ".hydra/config.yaml", "checkpoints/last.pt",
                                    "figures/attention.png", "new.md", "figures/new/compare.png"])
@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_out_and_plot_never_write_into_a_run(tmp_path: Path, capsys, option: str, target: str) -> None:
    runs = two_seeds(tmp_path / "sweep")
    for name in ("metrics.jsonl", "checkpoints/last.pt", "figures/attention.png"):
        (runs[0] / name).parent.mkdir(parents=True, exist_ok=True)
        (runs[0] / name).write_bytes(b"the run's own")
    path = runs[0] / target
    if option == "--plot" and path.suffix not in (".png",):
        path = path.with_name(path.name + ".png")
    before = {p: p.read_bytes() for p in runs[0].rglob("*") if p.is_file()}
    code, out, err = compare(capsys, tmp_path / "sweep", option, path)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {option} {path}: inside the run directory {runs[0]}") and err.count("\n") == 1
    assert {p: p.read_bytes() for p in runs[0].rglob("*") if p.is_file()} == before


def test_a_run_not_compared_is_protected_too_and_a_symlink_is_replaced_not_followed(tmp_path: Path, capsys) -> None:
    two_seeds(tmp_path / "sweep")
    other = write_run(tmp_path / "other", "se", 7, 0.5)
    code, _, err = compare(capsys, tmp_path / "sweep", "--out", other / "summary.json")
    assert code == 2 and "inside the run directory" in err
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "table.md"
    link.symlink_to(victim)
    code, _, err = compare(capsys, tmp_path / "sweep", "--out", link)
    assert code == 0 and victim.read_text() == "keep me"
    assert not link.is_symlink() and link.read_text().startswith("### data=digits")
    code, _, err = compare(capsys, tmp_path / "sweep", "--out", tmp_path / "x.png", "--plot", tmp_path / "x.png")
    assert code == 2 and "--out and --plot name the same file" in err


def test_a_symlinked_folder_into_a_run_is_refused(tmp_path: Path, capsys) -> None:
    runs = two_seeds(tmp_path / "sweep")
    (tmp_path / "door").symlink_to(runs[1])
    code, _, err = compare(capsys, tmp_path / "sweep", "--out", tmp_path / "door" / "summary.json")
    assert code == 2 and f"inside the run directory {runs[1]}" in err
    assert json.loads((runs[1] / "summary.json").read_text())["status"] == "completed"


# ---------------------------------------------------------------------------------------- inputs are data

BAD_SUMMARIES = {
    "a list where a name goes": (lambda s: s["primary"].update(name=["test", "acc"]), "primary.name is"),
    "a list as the model": (lambda s: s.update(model=["se"]), 'its model is ["se"], not a string'),
    "a huge integer primary": (lambda s: s["primary"].update(value=10**400), "primary.value 1000000000"),
    "1e308": (lambda s: s["primary"].update(value=1e308), "primary.value 1e+308 is out of range"),
    "-1e308 in a metric": (lambda s: s["metrics"].update({"test/loss": -1e308}), "metrics.test/loss -1e+308 is out"),
    "a huge cost": (lambda s: s.update(params=10**200), "its params 1000000000"),
    "higher_is_better as a string": (lambda s: s["primary"].update(higher_is_better="false"),
                                     'primary.higher_is_better is "false", not true or false'),
    "higher_is_better as 0": (lambda s: s["primary"].update(higher_is_better=0), "higher_is_better is 0"),
    "a string seed": (lambda s: s.update(seed="0"), 'its seed is "0", not a whole number'),
    "a boolean seed": (lambda s: s.update(seed=True), "its seed is true, not a whole number"),
    "a string primary value": (lambda s: s["primary"].update(value="0.9"), 'primary.value is "0.9", not a number'),
    "metrics as a list": (lambda s: s.update(metrics=[1, 2]), "metrics are not a JSON object"),
    "a dict as the task": (lambda s: s.update(task={"a": 1}), "its task is"),
    "a number as wandb_id": (lambda s: s.update(wandb_id=5), "its wandb_id is 5, not a string"),
    "overrides not strings": (lambda s: s.update(overrides=[1]), "overrides are not all strings"),
    "attention not an object": (lambda s: s.update(attention=[]), "its attention is [], not a JSON object"),
    "attention summary a list": (lambda s: s.update(attention={"summary": [1]}), "attention.summary is [1]"),
    "deep nesting": (lambda s: s.update(versions=json.loads("[" * 200 + "]" * 200)), "nests deeper than 32"),
}


@pytest.mark.parametrize("case", BAD_SUMMARIES)
def test_a_summary_field_of_the_wrong_kind_skips_its_run_with_a_warning(tmp_path: Path, capsys, case: str) -> None:
    runs = two_seeds(tmp_path / "sweep")
    change, message = BAD_SUMMARIES[case]
    edit_summary(runs[2], change)
    code, out, err = compare(capsys, tmp_path / "sweep", "--format", "csv")
    assert code == 0, err
    assert f"warning: skipped {runs[2] / 'summary.json'}: unusable: its" in err or "nests deeper" in err
    assert message in err and "Traceback" not in err
    assert len(out.splitlines()) == 3  # header, none (2 seeds), se (1 seed left)


def test_json_nested_past_the_interpreters_limit_is_skipped(tmp_path: Path, capsys) -> None:
    runs = two_seeds(tmp_path / "sweep")
    (runs[3] / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = compare(capsys, tmp_path / "sweep")
    assert code == 0 and "unusable: it nests deeper than 32 levels" in err


def test_nan_and_infinity_still_mark_a_run_not_finite(tmp_path: Path, capsys) -> None:
    runs = two_seeds(tmp_path / "sweep")
    edit_summary(runs[3], lambda s: s["primary"].update(value=float("inf")))
    code, out, err = compare(capsys, tmp_path / "sweep", "--format", "json")
    assert code == 0 and json.loads(out)["data_sets"][0]["not_completed"][0]["status"] == "not finite"


YAML_ATTACKS = {
    "an alias bomb": "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(  # 9**9 nodes once expanded
        f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")),
    "deep flow nesting": "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep block nesting": "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",
}


@pytest.mark.parametrize("case", YAML_ATTACKS)
@pytest.mark.parametrize("name", ["config.yaml", "hydra.yaml"])
def test_hostile_yaml_is_refused_quickly(tmp_path: Path, capsys, case: str, name: str) -> None:
    runs = two_seeds(tmp_path / "sweep")
    (runs[3] / ".hydra" / name).write_text(YAML_ATTACKS[case])
    start = time.monotonic()
    code, _, err = compare(capsys, tmp_path / "sweep")
    assert time.monotonic() - start < 10 and code == 0 and "Traceback" not in err
    if name == "config.yaml":
        assert f"skipped {runs[3] / '.hydra' / 'config.yaml'}: unreadable (it " in err


def test_a_path_with_glob_characters_that_exists_is_taken_literally(tmp_path: Path, capsys) -> None:
    literal = write_run(tmp_path / "sweep", "se", 0, 0.5, overrides=["model=se", "seed=0", "trainer.betas=[0.9,0.99]"])
    write_run(tmp_path / "sweep", "se", 1, 0.7, overrides=["model=se", "seed=1"])
    assert "[0.9,0.99]" in literal.name
    code, out, err = compare(capsys, literal, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["data_sets"][0]["rows"][0]["seeds"] == [0]
    (tmp_path / "d").mkdir()
    write_run(tmp_path / "d" / "run[1]", "se", 0, 0.5, overrides=["x"])
    write_run(tmp_path / "d" / "run1", "se", 1, 0.7, overrides=["x"])
    code, out, err = compare(capsys, tmp_path / "d" / "run[1]" / "x", "--format", "json")
    assert code == 0 and json.loads(out)["data_sets"][0]["rows"][0]["seeds"] == [0]
    code, out, err = compare(capsys, str(tmp_path / "d" / "run[1]"), "--format", "json")
    assert code == 0 and json.loads(out)["data_sets"][0]["rows"][0]["seeds"] == [0]
    code, out, err = compare(capsys, str(tmp_path / "d" / "run[0-9]"), "--format", "json")  # not there: a glob
    assert code == 0 and json.loads(out)["data_sets"][0]["rows"][0]["seeds"] == [1]


# ---------------------------------------------------------------------------------------- text is data

HOSTILE_NAMES = ["[/]", "[/bold]", "[bold red]loud", "[link=https://example.com]x", "v\x1b]0;retitled\x07",
                 "red\x1b[31m", "two\nlines", "a|b", "rtl\u202eevil"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_from_summaries_print_as_themselves(tmp_path: Path, capsys, name: str) -> None:
    runs = two_seeds(tmp_path / "sweep")
    for run in runs:
        edit_summary(run, lambda s: s.update(data=name))
    shown = printable(name)
    code, out, err = compare(capsys, tmp_path / "sweep")
    assert code == 0, err
    assert f"data={shown} · classify" in out and "\x1b" not in out and "\u202e" not in out
    code, out, err = compare(capsys, tmp_path / "sweep", "--format", "markdown")
    assert code == 0 and f"### data={shown} · classify" in out and "\x1b" not in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert all(line.endswith(" |") for line in rows) and len(rows) == 6  # two tables: a header and 2 rows each
    code, out, err = compare(capsys, tmp_path / "sweep", "--format", "csv")  # the csv module quotes; data kept
    assert [r[0] for r in csv.reader(io.StringIO(out))][1:] == [name, name]
    code, out, err = compare(capsys, tmp_path / "sweep", "--plot", tmp_path / "p.png", "--format", "json")
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 0
    assert json.loads(out)["data_sets"][0]["data"] == name


def test_a_run_directory_and_an_error_with_markup_print_as_themselves(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep[v2]"
    runs = two_seeds(sweep)
    failed = write_run(sweep, "se", 3, None, status="failed", extra={"error": "boom [/] [red]x\x1b[2J"})
    edit_summary(runs[0], lambda s: s["primary"].update(name="test/$acc"))  # a lone $: no mathtext
    edit_summary(runs[1], lambda s: s["primary"].update(name="test/$acc"))
    edit_summary(runs[2], lambda s: s["primary"].update(name="test/$acc"))
    edit_summary(runs[3], lambda s: s["primary"].update(name="test/$acc"))
    edit_summary(failed, lambda s: s["primary"].update(name="test/$acc"))
    code, out, err = compare(capsys, sweep, "--plot", tmp_path / "p.png")
    assert code == 0, err
    text = " ".join(out.split())
    assert "boom [/] [red]x\\x1b[2J" in text and "sweep[v2]" in text and "\x1b" not in out
