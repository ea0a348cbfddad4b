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


# ---------------------------------------------------------------------------------------- odd run sets

def _runs(root: Path, spec: list[tuple[str, int, float | None]], **kw) -> list[Path]:
    return [write_run(root, model, seed, acc, **kw) for model, seed, acc in spec]


def _one_run(root: Path) -> None:
    _runs(root, [("se", 0, 0.9)])


def _all_failed(root: Path) -> None:
    for seed in (0, 1):
        write_run(root, "se", seed, None, status="failed", extra={"error": "boom"})


def _failed_before_the_task(root: Path) -> None:  # what job.py writes when the task never built: nulls
    two_seeds(root)
    run = write_run(root, "cbam", 0, None, status="failed", extra={"error": "no data"})
    edit_summary(run, lambda s: s.update(primary={"name": None, "value": None, "higher_is_better": None},
                                         task=None, backbone=None, params=None))


def _mixed_tasks(root: Path) -> None:
    two_seeds(root / "a")
    for run in two_seeds(root / "b", data="reviews"):
        edit_summary(run, lambda s: s.update(task="rate", primary={**s["primary"], "name": "test/rmse",
                                                                    "higher_is_better": False}))


def _mixed_primaries(root: Path) -> None:
    runs = two_seeds(root)
    edit_summary(runs[3], lambda s: s["primary"].update(name="test/f1"))


def _duplicate_seeds(root: Path) -> None:
    two_seeds(root / "a")
    two_seeds(root / "b")


def _missing_hydra(root: Path) -> None:
    runs = two_seeds(root)
    for p in (runs[3] / ".hydra").iterdir():
        p.unlink()
    (runs[3] / ".hydra").rmdir()


def _hydra_yaml_missing(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / ".hydra" / "hydra.yaml").unlink()


def _choices_a_list(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices: [1, 2]\n")


def _config_empty(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / ".hydra" / "config.yaml").write_text("")


def _config_a_list(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / ".hydra" / "config.yaml").write_text("- 1\n- 2\n")


def _summary_empty(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / "summary.json").write_text("")


def _summary_bom(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / "summary.json").write_text("\ufeff" + (runs[3] / "summary.json").read_text())


def _summary_not_utf8(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / "summary.json").write_bytes(b'{"status": "\xff\xfe"}')


def _summary_a_folder(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / "summary.json").unlink()
    (runs[3] / "summary.json").mkdir()


def _summary_huge(root: Path) -> None:  # a sparse file: 100 MB on paper, nothing on disk
    runs = two_seeds(root)
    with open(runs[3] / "summary.json", "r+b") as f:
        f.truncate(100 * 2**20)


def _summary_nan(root: Path) -> None:
    runs = two_seeds(root)
    text = (runs[3] / "summary.json").read_text()
    (runs[3] / "summary.json").write_text(text.replace('"value": 0.96', '"value": NaN'))


def _odd_status(root: Path) -> None:
    runs = two_seeds(root)
    edit_summary(runs[3], lambda s: s.update(status="running"))


def _interrupted(root: Path) -> None:
    runs = two_seeds(root)
    edit_summary(runs[3], lambda s: s.update(status="interrupted"))


def _string_metrics(root: Path) -> None:
    runs = two_seeds(root)
    edit_summary(runs[3], lambda s: s["metrics"].update({"test/loss": "low", "val/acc": [1]}))


def _infinite_metric(root: Path) -> None:
    runs = two_seeds(root)
    edit_summary(runs[3], lambda s: s["metrics"].update({"test/loss": float("inf")}))


def _completed_without_value(root: Path) -> None:
    runs = two_seeds(root)
    edit_summary(runs[3], lambda s: s["primary"].update(value=None))


def _unicode_names(root: Path) -> None:
    for run in two_seeds(root):
        edit_summary(run, lambda s: s.update(data="数据🙂", model=s["model"] + "·注意"))


def _a_long_name(root: Path) -> None:
    for run in two_seeds(root):
        edit_summary(run, lambda s: s.update(model=s["model"] + "x" * 1000))


def _negative_and_huge_seeds(root: Path) -> None:
    runs = two_seeds(root)
    edit_summary(runs[0], lambda s: s.update(seed=-1))
    edit_summary(runs[2], lambda s: s.update(seed=-1))
    edit_summary(runs[1], lambda s: s.update(seed=2**70))
    edit_summary(runs[3], lambda s: s.update(seed=2**70))


def _one_variant(root: Path) -> None:
    _runs(root, [("se", 0, 0.9), ("se", 1, 0.91)])


def _no_baseline(root: Path) -> None:
    _runs(root, [("se", 0, 0.9), ("se", 1, 0.91), ("cbam", 0, 0.8), ("cbam", 1, 0.85)])


def _identical_scores(root: Path) -> None:
    _runs(root, [("none", 0, 0.9), ("none", 1, 0.9), ("se", 0, 0.9), ("se", 1, 0.9)])


def _tiny_differences(root: Path) -> None:
    _runs(root, [("none", 0, 1e-300), ("none", 1, 2e-300), ("se", 0, 3e-300), ("se", 1, 4e-300)])


def _extra_keys(root: Path) -> None:
    runs = two_seeds(root)
    edit_summary(runs[3], lambda s: s.update(surprise={"nested": [1, 2, {"x": None}]}))


def _a_symlink_loop(root: Path) -> None:
    two_seeds(root)
    (root / "loop").symlink_to(root)


def _a_file_beside_runs(root: Path) -> None:
    two_seeds(root)
    (root / "notes.txt").write_text("not a run")


def _config_yaml_a_folder(root: Path) -> None:
    runs = two_seeds(root)
    (runs[3] / ".hydra" / "config.yaml").unlink()
    (runs[3] / ".hydra" / "config.yaml").mkdir()


def _yaml_tags(root: Path) -> None:  # a python tag: safe loading refuses it
    runs = two_seeds(root)
    (runs[3] / ".hydra" / "config.yaml").write_text("a: !!python/object/apply:os.system ['echo pwned']\n")


# (build the folder, expected exit status, text expected on stdout or stderr)
RUN_SETS = {
    "one run": (_one_run, 0, "1 runs: 1 completed"),
    "all failed": (_all_failed, 2, "no completed run to compare"),
    "failed before its task existed": (_failed_before_the_task, 0, "no data"),
    "mixed tasks": (_mixed_tasks, 0, "data=reviews · rate"),
    "mixed primaries": (_mixed_primaries, 2, "different primary metrics (test/acc, test/f1)"),
    "duplicate seeds": (_duplicate_seeds, 0, "appears in several runs"),
    "missing .hydra": (_missing_hydra, 0, "missing: not an attnbench run directory"),
    "hydra.yaml missing": (_hydra_yaml_missing, 0, "4 runs: 4 completed"),
    "choices a list": (_choices_a_list, 0, "se"),
    "config.yaml empty": (_config_empty, 0, "unreadable (not a mapping)"),
    "config.yaml a list": (_config_a_list, 0, "unreadable (not a mapping)"),
    "config.yaml a folder": (_config_yaml_a_folder, 0, "missing: not an attnbench run directory"),
    "config.yaml with a python tag": (_yaml_tags, 0, "unreadable (could not determine a constructor"),
    "summary.json empty": (_summary_empty, 0, "corrupt or half-written"),
    "summary.json with a BOM": (_summary_bom, 0, "corrupt or half-written"),
    "summary.json not UTF-8": (_summary_not_utf8, 0, "corrupt or half-written"),
    "summary.json a folder": (_summary_a_folder, 0, "no summary"),
    "summary.json 100 MB": (_summary_huge, 0, "100 MB, more than the 16 MB"),
    "summary.json with NaN": (_summary_nan, 0, "not finite"),
    "an unknown status": (_odd_status, 0, "running"),
    "an interrupted run": (_interrupted, 0, "interrupted"),
    "metrics that are not numbers": (_string_metrics, 0, "4 runs: 4 completed"),
    "an infinite metric": (_infinite_metric, 0, "test/loss"),
    "completed without a value": (_completed_without_value, 0, "its primary.value is null, not a number"),
    "unicode names": (_unicode_names, 0, "data=数据🙂"),
    "a 1000-character name": (_a_long_name, 0, "x" * 100),
    "negative and huge seeds": (_negative_and_huge_seeds, 0, "paired"),
    "one variant": (_one_variant, 0, "2 runs: 2 completed"),
    "no baseline": (_no_baseline, 0, "cbam"),
    "identical scores": (_identical_scores, 0, "0.9000"),
    "tiny differences": (_tiny_differences, 0, "0.0000"),
    "extra keys": (_extra_keys, 0, "4 runs: 4 completed"),
    "a symlink loop": (_a_symlink_loop, 0, "4 runs: 4 completed"),
    "a file beside the runs": (_a_file_beside_runs, 0, "4 runs: 4 completed"),
}


@pytest.mark.parametrize("case", RUN_SETS)
@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_odd_run_sets_end_in_a_table_or_one_line(tmp_path: Path, capsys, case: str, fmt: str) -> None:
    build, status, expected = RUN_SETS[case]
    build(tmp_path / "sweep")
    code, out, err = compare(capsys, tmp_path / "sweep", "--format", fmt)
    assert code == status and "Traceback" not in err, err
    if status == 2:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert out == "" and len(errors) == 1 and expected in errors[0], err
    elif fmt == "table":
        assert expected in " ".join(out.split()) or expected in err, out + err
    if fmt == "json" and status == 0:
        json.loads(out)
    if fmt == "csv" and status == 0:
        rows = list(csv.reader(io.StringIO(out)))
        assert len({len(r) for r in rows}) == 1


def test_overlapping_paths_count_each_run_once_and_odd_paths_work(tmp_path: Path, capsys, monkeypatch) -> None:
    runs = two_seeds(tmp_path / "sweep")
    code, out, _ = compare(capsys, tmp_path / "sweep", f"{tmp_path / 'sweep'}/", runs[0], str(tmp_path / "sw*"),
                           "--format", "json")
    assert code == 0 and sum(r["n"] for r in json.loads(out)["data_sets"][0]["rows"]) == 4
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out, _ = compare(capsys, "~/sweep", "--format", "json")
    assert code == 0
    code, _, err = compare(capsys, tmp_path / "sweep" / "zz*")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'sweep' / 'zz*'} matches nothing"
    (tmp_path / "plain.txt").write_text("x")
    code, _, err = compare(capsys, tmp_path / "plain.txt")
    assert code == 2 and "no runs in" in err


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_out_and_plot_into_new_folders_and_every_picture_format(tmp_path: Path, capsys, suffix: str) -> None:
    two_seeds(tmp_path / "sweep")
    out, picture = tmp_path / "new" / "deeper" / "table.csv", tmp_path / "pics" / f"p{suffix}"
    code, _, err = compare(capsys, tmp_path / "sweep", "--out", out, "--plot", picture)
    assert code == 0 and out.read_text().startswith("data,task") and picture.stat().st_size > 0, err
    assert not [p for p in (tmp_path / "pics").iterdir() if p.name.endswith(".tmp")]


def test_out_onto_a_folder_is_one_line_and_leaves_no_temporary_file(tmp_path: Path, capsys) -> None:
    two_seeds(tmp_path / "sweep")
    (tmp_path / "folder.md").mkdir()
    code, _, err = compare(capsys, tmp_path / "sweep", "--out", tmp_path / "folder.md")
    assert code == 2 and err.startswith("error: cannot write") and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_csv_quotes_commas_quotes_and_newlines(tmp_path: Path, capsys) -> None:
    name = 'a,b "c"\nd'
    for run in two_seeds(tmp_path / "sweep"):
        edit_summary(run, lambda s: s.update(data=name))
    code, out, _ = compare(capsys, tmp_path / "sweep", "--format", "csv")
    assert code == 0 and [r[0] for r in csv.reader(io.StringIO(out))][1:] == [name, name]
