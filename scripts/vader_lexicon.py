"""VADER's rule-based lexicon on the test rows of a rating file: the peer a sentiment researcher would reach for.

Hutto & Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM
2014. The test rows are carved exactly as ``attnbench train data=text_file`` carves them (the same loader, the
same ``test_fraction`` and ``split_seed``), so the figure sits beside the test/pearson of a run on that file:

    pip install vaderSentiment
    python scripts/vader_lexicon.py ../shared/data/vader/movies.tsv --label-column rating

prints the Pearson r of VADER's compound score with the ratings (scale-free: the compound lies in [−1, 1], the
ratings in −4…+4), and the RMSE of the least-squares line from the compound to the ratings fitted on the
training rows, which is comparable with a run's test/rmse.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from attnbench.data.text import load_text_file


def compound_scores(texts: list[str]) -> np.ndarray:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return np.array([analyzer.polarity_scores(text)["compound"] for text in texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a .csv, .tsv, .jsonl or .parquet file, as data.path")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    data = load_text_file(args.path, args.text_column, args.label_column, target="regression",
                          val_fraction=args.val_fraction, test_fraction=args.test_fraction, split_seed=args.split_seed)
    train, test = compound_scores(data.train.texts), compound_scores(data.test.texts)
    slope, intercept = np.polyfit(train, data.train.labels, 1)
    residual = data.test.labels - (slope * test + intercept)
    result = {"test_rows": len(data.test), "pearson": float(np.corrcoef(test, data.test.labels)[0, 1]),
              "rmse": float(np.sqrt(np.mean(residual ** 2)))}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
