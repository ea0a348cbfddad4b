"""The rate task from the command line, as a user types it: it learns the synthetic reviews, trains on the
user's own files (classes and regression), and refuses bad files with one line and exit status 2."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runner import assert_complete_summary, attnbench, run_dirs

from attnbench.data.reviews import generate_reviews

# small and quick: short reviews, a tiny GRU, a high learning rate
SMALL = ["logger=none", "data.train_size=2000", "data.val_size=200", "data.test_size=200", "data.max_tokens=40",
         "backbone.embed_dim=32", "backbone.hidden=32", "trainer.batch_size=32", "trainer.lr=0.02"]


def test_reviews_learn_and_report_evidence_mass(tmp_path):
    attnbench("train", "-m", "data=reviews", "model=ffattn,max", "trainer.epochs=5", *SMALL, cwd=tmp_path,
              check=True)
    runs = {assert_complete_summary(d)["model"]: d for d in run_dirs(tmp_path / "outputs")}
    ffattn, pooled = (json.loads((runs[m] / "summary.json").read_text()) for m in ("ffattn", "max"))
    assert ffattn["primary"]["name"] == "test/acc" and ffattn["metrics"]["test/acc"] >= 0.6  # chance: 0.2
    assert {"test/macro_f1", "test/mae", "test/loss"} <= set(ffattn["metrics"])
    assert 0.04 < ffattn["metrics"]["test/evidence_mass"] <= 1  # uniform attention would give about 0.05
    assert "notes" not in ffattn
    assert pooled["metrics"]["test/evidence_mass"] is None
    assert "not applicable" in pooled["notes"]["test/evidence_mass"]
    figures = runs["ffattn"] / "figures"
    assert (figures / "attention.png").stat().st_size > 0 and "<span" in (figures / "attention.html").read_text()
    assert not (runs["max"] / "figures").exists()
    vocab = json.loads((runs["ffattn"] / "vocab.json").read_text())
    assert vocab["tokens"][:2] == ["<pad>", "<unk>"] and "awful" in vocab["tokens"]


def _reviews_file(path: Path, kind: str) -> Path:
    """Synthetic reviews as a user's file: a TSV with a continuous rating, or a CSV with string labels."""
    rng = random.Random(0)
    reviews = generate_reviews(1200, seed=5, max_tokens=40)
    if kind == "regression":
        lines = ["rating\treview"] + [f"{r.stars - 3 + rng.uniform(-0.3, 0.3):.3f}\t{' '.join(r.tokens)}"
                                      for r in reviews]
    else:
        name = {1: "bad", 2: "bad", 3: "mixed", 4: "good", 5: "good"}
        lines = ["id,text,verdict"] + [f"{i},\"{' '.join(r.tokens)}\",{name[r.stars]}" for i, r in enumerate(reviews)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_text_file_regression_tsv_and_string_label_csv(tmp_path):
    tsv = _reviews_file(tmp_path / "ratings.tsv", "regression")
    csv = _reviews_file(tmp_path / "verdicts.csv", "class")
    runs = {"regression": [f"data.path={tsv}", "data.text_column=review", "data.label_column=rating",
                           "data.target=regression"],
            "class": [f"data.path={csv}", "data.label_column=verdict"]}
    common = ["train", "data=text_file", "trainer.epochs=4", *SMALL[:1], *SMALL[5:]]
    for kind in runs:
        (tmp_path / kind).mkdir()
    with ThreadPoolExecutor(2) as pool:  # two processes at once: each is mostly start-up and one core's work
        results = dict(zip(runs, pool.map(lambda kind: attnbench(*common, *runs[kind], cwd=tmp_path / kind), runs)))
    for result in results.values():
        assert result.returncode == 0, result.stderr
    regression = assert_complete_summary(run_dirs(tmp_path / "regression" / "outputs")[0])
    assert regression["primary"] == {"name": "test/rmse", "value": regression["metrics"]["test/rmse"],
                                     "higher_is_better": False}
    assert {"test/mse", "test/mae", "test/pearson"} <= set(regression["metrics"])
    assert regression["metrics"]["test/pearson"] > 0.5  # ratings spread over -2..2: the model tracks them
    labels = assert_complete_summary(run_dirs(tmp_path / "class" / "outputs")[0])
    assert labels["primary"]["name"] == "test/acc" and labels["metrics"]["test/acc"] > 0.5  # 3 classes
    assert "test/mae" not in labels["metrics"]  # bad < mixed < good is not known to attnbench: no MAE


def test_bad_text_files_end_with_one_line(tmp_path):
    files = {"empty.csv": b"", "labels.csv": b"text,label\ngood food,pos\nbad food,neg\nok,meh\n",
             "ratings.tsv": b"text\tscore\ngood food\t4\nbad food\tfive\n", "latin1.csv": b"text,label\ncaf\xe9,1\n"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    cases = {
        "missing column": ([f"data.path={tmp_path / 'labels.csv'}", "data.text_column=review"],
                           "has no column 'review' (data.text_column); its columns: text, label"),
        "empty file": ([f"data.path={tmp_path / 'empty.csv'}"], "is empty"),
        "label outside classes": ([f"data.path={tmp_path / 'labels.csv'}", "data.classes=[pos,neg]"],
                                  "row 3 has label 'meh', which is not one of the declared classes pos, neg"),
        "non-numeric rating": ([f"data.path={tmp_path / 'ratings.tsv'}", "data.label_column=score",
                                "data.target=regression"], "row 2 has 'five' in column 'score', which is not a number"),
        "undecodable": ([f"data.path={tmp_path / 'latin1.csv'}"], "is not UTF-8 text"),
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        results = dict(zip(cases, pool.map(
            lambda args: attnbench("train", "data=text_file", "logger=none", *args, cwd=tmp_path),
            [args for args, _ in cases.values()])))
    for case, (_, message) in cases.items():
        result = results[case]
        assert result.returncode == 2, (case, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (case, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
