"""Text rating loaders on fixtures in the real formats: the three hub sets as parquet with their hub columns,
ClassLabel features and card configs (loaded offline through ``datasets``), and the user's own files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnbench.data.text import load_hub_text, load_text_file
from attnbench.errors import UserError

# (folder, files per split, features: column -> ClassLabel names or "string") as on the hub
HUB_LAYOUTS = {
    "Yelp/yelp_review_full": ("yelp_review_full", {"train": 1, "test": 1},
                              {"label": ["1 star", "2 star", "3 stars", "4 stars", "5 stars"], "text": "string"}),
    "fancyzhx/amazon_polarity": ("amazon_polarity", {"train": 4, "test": 1},
                                 {"label": ["negative", "positive"], "title": "string", "content": "string"}),
    "stanfordnlp/imdb": ("plain_text", {"train": 1, "test": 1, "unsupervised": 1},
                         {"text": "string", "label": ["neg", "pos"]}),
}


def write_hub_fixture(root: Path, hub_id: str, rows: int = 30) -> Path:
    """A folder laid out like the hub repository: <config>/<split>-0000i-of-0000n.parquet and a README.md
    whose YAML names the features and the data files, as the real dataset cards do."""
    import datasets

    folder, files, columns = HUB_LAYOUTS[hub_id]
    features = datasets.Features({name: datasets.ClassLabel(names=kind) if isinstance(kind, list)
                                  else datasets.Value(kind) for name, kind in columns.items()})
    base = root / hub_id.replace("/", "__")
    (base / folder).mkdir(parents=True)
    card = ["---", "dataset_info:", f"  config_name: {folder}", "  features:"]
    for name, kind in columns.items():
        if isinstance(kind, list):
            card += [f"  - name: {name}", "    dtype:", "      class_label:", "        names:"]
            card += [f"          '{i}': {n}" for i, n in enumerate(kind)]
        else:
            card += [f"  - name: {name}", f"    dtype: {kind}"]
    card += ["configs:", f"- config_name: {folder}", "  data_files:"]
    for split, count in files.items():
        card += [f"  - split: {split}", f"    path: {folder}/{split}-*"]
        for part in range(count):
            data = {}
            for name, kind in columns.items():
                if isinstance(kind, list):  # the unsupervised split of IMDB is labelled -1
                    data[name] = [-1 if split == "unsupervised" else i % len(kind) for i in range(rows)]
                else:
                    data[name] = [f"{split} {part} {name} {i} " + ("great" if i % 2 else "bad") for i in range(rows)]
            datasets.Dataset.from_dict(data, features=features).to_parquet(
                str(base / folder / f"{split}-{part:05d}-of-{count:05d}.parquet"))
    card += ["  default: true", "---", ""]
    (base / "README.md").write_text("\n".join(card))
    return base


@pytest.mark.parametrize("hub_id,text_columns", [("Yelp/yelp_review_full", ["text"]),
                                                 ("fancyzhx/amazon_polarity", ["title", "content"]),
                                                 ("stanfordnlp/imdb", ["text"])])
def test_hub_loaders_on_parquet_fixtures(tmp_path, hub_id, text_columns):
    path = write_hub_fixture(tmp_path, hub_id)
    data = load_hub_text(str(path), text_columns, val_size=10, limit=None)
    _, files, columns = HUB_LAYOUTS[hub_id]
    names = columns["label"]
    assert data.classes == names and data.target == "class"
    assert len(data.test) == 30 and len(data.train) + len(data.val) == 30 * files["train"]
    assert len(data.val) == 10 and set(data.val.labels.tolist()) == set(range(len(names)))  # stratified
    if hub_id.startswith("Yelp"):
        assert data.class_values == [1.0, 2.0, 3.0, 4.0, 5.0]  # MAE in stars
    if len(text_columns) == 2:
        assert data.test.texts[0] == "test 0 title 0 bad\ntest 0 content 0 bad"
    # the validation carve and the limit are fixed by split_seed
    again = load_hub_text(str(path), text_columns, val_size=10)
    assert again.val.texts == data.val.texts
    limited = load_hub_text(str(path), text_columns, val_size=5, limit=12)
    assert len(limited.train) + len(limited.val) == 12 and len(limited.test) == 12


def test_hub_loader_refuses_a_missing_column(tmp_path):
    path = write_hub_fixture(tmp_path, "stanfordnlp/imdb")
    with pytest.raises(UserError, match="has no column 'review'; its columns are text, label"):
        load_hub_text(str(path), ["review"])


# ------------------------------------------------------------------------------------------ text_file


def _rows(n: int = 40) -> list[dict]:
    return [{"review": f"the food was {'great' if i % 2 else 'awful'} number {i}", "stars": i % 2 * 4 + 1,
             "sentiment": "pos" if i % 2 else "neg", "score": (i % 2) * 2.5 - 1.25 + i / 100} for i in range(n)]


def write_table(path: Path, rows: list[dict]) -> Path:
    if path.suffix in (".csv", ".tsv"):
        sep = "\t" if path.suffix == ".tsv" else ","
        lines = [sep.join(rows[0])] + [sep.join(str(v) for v in row.values()) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_text_file_formats_classes_and_regression(tmp_path, suffix):
    path = write_table(tmp_path / f"reviews{suffix}", _rows())
    data = load_text_file(str(path), text_column="review", label_column="sentiment", val_fraction=0.2,
                          test_fraction=0.2)
    assert data.classes == ["neg", "pos"] and data.class_values is None  # string classes: no MAE
    assert (len(data.train), len(data.val), len(data.test)) == (24, 8, 8)
    for split in (data.train, data.val, data.test):
        for text, label in zip(split.texts, split.labels):
            assert ("great" in text) == (data.classes[label] == "pos")
    stars = load_text_file(str(path), text_column="review", label_column="stars")
    assert stars.classes == ["1", "5"] and stars.class_values == [1.0, 5.0]  # numeric classes: MAE in stars
    ratings = load_text_file(str(path), text_column="review", label_column="score", target="regression")
    assert ratings.target == "regression" and ratings.classes == [] and ratings.train.labels.dtype == np.float32
    expected = {row["review"]: row["score"] for row in _rows()}
    assert all(abs(expected[t] - y) < 1e-5 for t, y in zip(ratings.test.texts, ratings.test.labels))


def test_text_file_declared_classes_order_them(tmp_path):
    path = write_table(tmp_path / "r.csv", _rows())
    data = load_text_file(str(path), "review", "sentiment", classes=["pos", "neg"])
    assert data.classes == ["pos", "neg"]
    with pytest.raises(UserError, match="row 1 has label 'neg', which is not one of the declared classes pos, mixed"):
        load_text_file(str(path), "review", "sentiment", classes=["pos", "mixed"])


@pytest.mark.parametrize("content,kwargs,message", [
    (b"", {}, "is empty"),
    (b"review,stars\n", {"text_column": "review", "label_column": "stars"}, "has a header but no rows"),
    (b"review,stars\nok,1\n", {"text_column": "text"},
     "has no column 'text' (data.text_column); its columns: review, stars"),
    (b"review,stars\nok,1\nfine,x\n", {"text_column": "review", "label_column": "stars", "target": "regression"},
     "row 2 has 'x' in column 'stars', which is not a number"),
    (b"review,stars\ncaf\xe9,1\n", {"text_column": "review", "label_column": "stars"}, "is not UTF-8 text"),
])
def test_text_file_bad_input(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_text_file(str(path), **kwargs)
