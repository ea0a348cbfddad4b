"""Text rating data: reviews from the Hugging Face hub (Yelp, Amazon, IMDB) and the user's own files.

Every loader returns raw texts and labels split into train / val / test (``TextData``); the rate task builds
the vocabulary from the training texts and turns all three splits into padded index tensors.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .hub import check_columns, load_hub

TARGETS = ("class", "regression")
TEXT_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                 ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class TextSplit:
    texts: list[str]
    labels: np.ndarray  # int64 class indices, or float32 ratings for regression
    evidence: list[list[int]] | None = None  # token positions that carry the label (synthetic reviews only)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray) -> TextSplit:
        evidence = [self.evidence[i] for i in index] if self.evidence is not None else None
        return TextSplit([self.texts[i] for i in index], self.labels[index], evidence)


@dataclass
class TextData:
    train: TextSplit
    val: TextSplit
    test: TextSplit
    target: str  # "class" (cross-entropy) or "regression" (mean squared error)
    classes: list[str] = field(default_factory=list)  # class names in label order; empty for regression
    class_values: list[float] | None = None  # what each class means on a rating scale (MAE); None: unordered
    source: str = ""

    def check(self) -> None:
        for name in ("train", "val", "test"):
            if len(getattr(self, name)) == 0:
                raise UserError(f"{self.source}: the {name} split is empty; use more data or change the split "
                                f"fractions")
        if self.target == "class" and len(self.classes) < 2:
            raise UserError(f"{self.source}: only one class ({', '.join(self.classes)}); rating needs two or more")


def _carve(labels: np.ndarray, fraction: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, carved): ``fraction`` of the rows carved out with a fixed seed, per class when possible."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    if fraction <= 0 or len(labels) < 2:
        return index, index[:0]
    by_class = None
    if stratify:
        counts = np.bincount(labels)
        by_class = labels if counts[counts > 0].min() >= 2 else None  # a class of one row cannot be split
    try:
        rest, carved = train_test_split(index, test_size=fraction, random_state=seed, stratify=by_class)
    except ValueError:  # too few rows per class for this fraction: split without stratification
        rest, carved = train_test_split(index, test_size=fraction, random_state=seed)
    return np.sort(rest), np.sort(carved)


def _limit(split: TextSplit, limit: int | None, seed: int) -> TextSplit:
    if limit is None or limit >= len(split):
        return split
    if limit < 1:
        raise UserError(f"data.limit must be at least 1, got {limit}")
    return split.subset(np.sort(np.random.default_rng(seed).permutation(len(split))[:limit]))


def _class_values(names: list[str]) -> list[float]:
    """A rating per class for the MAE: the number the name starts with ("1 star" -> 1), else its position
    (hub label lists are ordered: negative < positive)."""
    numbers = [re.match(r"\s*(-?\d+(?:\.\d+)?)", name) for name in names]
    if all(numbers):
        return [float(m.group(1)) for m in numbers]  # type: ignore[union-attr]
    return [float(i) for i in range(len(names))]


# ------------------------------------------------------------------------------------------ the hub


def load_hub_text(hub_id: str, text_columns: list[str], label_column: str = "label", val_size: int = 5000,
                  limit: int | None = None, split_seed: int = 0) -> TextData:
    """A review data set from the Hugging Face hub with a ClassLabel column (``Yelp/yelp_review_full``,
    ``fancyzhx/amazon_polarity``, ``stanfordnlp/imdb``). Several text columns (Amazon's title and content)
    are joined with a line break. ``validation`` is used when the source has one, else ``val_size`` rows
    are carved from train (stratified, ``split_seed``); ``limit`` subsamples each split first."""
    dd = load_hub(hub_id, "train on a local copy with data=text_file data.path=FILE")
    if "train" not in dd or "test" not in dd:
        raise UserError(f"{hub_id} must have train and test splits, found {', '.join(dd)}")
    check_columns(dd["train"], hub_id, [*text_columns, label_column])
    feature = dd["train"].features[label_column]
    if not hasattr(feature, "names"):
        raise UserError(f"{hub_id}: column {label_column!r} is not a class label ({feature}); use data=text_file "
                        f"with data.target=class or regression on a local copy")
    names = list(feature.names)

    def split(name: str) -> TextSplit:
        ds = dd[name]
        parts = [ds[column] for column in text_columns]
        texts = ["\n".join(str(p) for p in row if p is not None) for row in zip(*parts)]
        labels = np.asarray(ds[label_column], dtype=np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise UserError(f"{hub_id}:{name} has labels outside the {len(names)} declared classes "
                            f"({', '.join(names)})")
        return _limit(TextSplit(texts, labels), limit, split_seed)

    train, test = split("train"), split("test")
    if "validation" in dd:
        val = split("validation")
    else:
        fraction = min(val_size / max(len(train), 1), 0.5)
        rest, carved = _carve(train.labels, fraction, split_seed, stratify=True)
        train, val = train.subset(rest), train.subset(carved)
    data = TextData(train, val, test, "class", names, _class_values(names), source=hub_id)
    data.check()
    return data


# ------------------------------------------------------------------------------------------ local files


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(f"data.path={path} is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"data.path={path} is not UTF-8 text (undecodable byte {raw[e.start]:#04x} on line "
                        f"{line}); save it as UTF-8") from e


def _read_table(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and rows (dicts) of a CSV, TSV, JSON-lines or parquet file."""
    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"data.path={path}: unknown file type {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet")
    if kind == "parquet":
        import pyarrow.parquet as pq

        if path.stat().st_size == 0:
            raise UserError(f"data.path={path} is empty")
        try:
            table = pq.read_table(path)
        except Exception as e:
            raise UserError(f"data.path={path} is not a readable parquet file ({str(e).splitlines()[0]})") from e
        return table.column_names, table.to_pylist()
    text = _read_text(path)
    if kind == "jsonl":
        stripped = text.lstrip()
        if stripped.startswith("["):  # a .json file holding one array of objects
            try:
                rows = json.loads(stripped)
            except json.JSONDecodeError as e:
                raise UserError(f"data.path={path} is not valid JSON ({e.msg} on line {e.lineno})") from e
        else:
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UserError(f"data.path={path}: line {number} is not valid JSON ({e.msg})") from e
        if not all(isinstance(row, dict) for row in rows):
            raise UserError(f"data.path={path}: every line must be a JSON object with the text and label columns")
        columns = list(dict.fromkeys(key for row in rows for key in row))
        return columns, rows
    delimiter = "\t" if kind == "tsv" else ","
    # TSV files rarely quote their fields; a stray quote in a review must not swallow the following lines
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter,
                            quoting=csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL)
    try:
        rows = list(reader)
    except csv.Error as e:
        raise UserError(f"data.path={path} is not valid {kind.upper()} (line {reader.line_num}: {e})") from e
    return list(reader.fieldnames or []), rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# more distinct numeric labels than this, undeclared, are a rating: classification would train a class per value
NUMERIC_CLASSES_MAX = 20


def _class_order(labels: list[str]) -> list[str]:
    """Classes sorted numerically when every label is a number (1 < 2 < 10), else alphabetically."""
    if all(_number(label) is not None for label in labels):
        return sorted(labels, key=lambda label: float(label))
    return sorted(labels)


def load_text_file(path: str | None = None, text_column: str = "text", label_column: str = "label",
                   target: str = "class", classes: list[str] | None = None, val_fraction: float = 0.1,
                   test_fraction: float = 0.1, split_seed: int = 0) -> TextData:
    """The user's own reviews: a CSV, TSV, JSON-lines or parquet file with a text column and a label column.

    ``target=class``: labels are class names (strings or integers); ``classes`` declares them (and their
    order), else they are the distinct labels, sorted. ``target=regression``: a numeric rating column
    (e.g. -4..4 or 1-5 stars), trained with mean squared error. Validation and test rows are carved with
    ``split_seed`` (per class for ``class``).
    """
    if path is None:
        raise UserError("data=text_file needs data.path=FILE (a .csv, .tsv, .jsonl or .parquet file)")
    if target not in TARGETS:
        raise UserError(f"data.target must be class or regression, not {target!r}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) must be "
                        f"fractions that leave rows for training")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"data.path={path} is not a file")
    columns, rows = _read_table(file)
    for key, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            raise UserError(f"data.path={path} has no column {column!r} (data.{key}); its columns: "
                            f"{', '.join(map(str, columns)) or 'none'}")
    if not rows:
        raise UserError(f"data.path={path} has a header but no rows")

    texts = []
    for number, row in enumerate(rows, 1):
        text = row.get(text_column)
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"data.path={path}: row {number} of column {text_column!r} is not UTF-8 text") from e
        if text is None or not str(text).strip():
            raise UserError(f"data.path={path}: row {number} has no text in column {text_column!r}; fill or remove it")
        texts.append(str(text))

    values = [row.get(label_column) for row in rows]
    if target == "regression":
        ratings = []
        for number, value in enumerate(values, 1):
            rating = _number(value)
            if rating is None:
                raise UserError(f"data.path={path}: row {number} has {value!r} in column {label_column!r}, which is "
                                f"not a number (data.target=regression needs numeric ratings)")
            ratings.append(rating)
        labels = np.asarray(ratings, dtype=np.float32)
        names: list[str] = []
        class_values = None
    else:
        strings = []
        for number, value in enumerate(values, 1):
            if value is None or not str(value).strip():
                raise UserError(f"data.path={path}: row {number} has no label in column {label_column!r}")
            # 4.0 from a parquet float column and "4" from a CSV name the same class
            number_value = _number(value)
            strings.append(str(int(number_value)) if number_value is not None and number_value.is_integer()
                           else str(value).strip())
        if classes is not None:
            names = [str(c) for c in classes]
            unknown = sorted(set(strings) - set(names))
            if unknown:
                row = strings.index(unknown[0]) + 1
                raise UserError(f"data.path={path}: row {row} has label {unknown[0]!r}, which is not one of the "
                                f"declared classes {', '.join(names)} (data.classes)")
        else:
            names = _class_order(sorted(set(strings)))
            if len(names) > NUMERIC_CLASSES_MAX and all(_number(name) is not None for name in names):
                raise UserError(f"data.path={path}: column {label_column!r} holds {len(names):,} distinct numbers, "
                                f"a rating rather than classes: add data.target=regression (or name the classes "
                                f"in data.classes)")
        index = {name: i for i, name in enumerate(names)}
        labels = np.asarray([index[s] for s in strings], dtype=np.int64)
        ordered = all(_number(name) is not None for name in names)
        class_values = [float(name) for name in names] if ordered else None

    whole = TextSplit(texts, labels)
    strata = labels if target == "class" else np.zeros(len(labels), dtype=np.int64)
    rest, test = _carve(strata, test_fraction, split_seed, stratify=target == "class")
    inner = val_fraction / max(1 - test_fraction, 1e-9)
    train, val = _carve(strata[rest], inner, split_seed, stratify=target == "class")
    data = TextData(whole.subset(rest[train]), whole.subset(rest[val]), whole.subset(test), target, names,
                    class_values, source=f"data.path={path}")
    data.check()
    return data
