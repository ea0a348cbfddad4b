"""The bad-input catalogue: each mistake typed as a user would type it, in a subprocess.

Every one must end with one line on stderr that names the problem, exit status 2, no traceback, and leave
what is already on disk exactly as it was: the workspace holds two finished runs, and its every file (bytes
and modification time) is compared before and after each mistake.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import attnbench


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished one-epoch runs (``run``: cbam, ``other``: se) and the data files the mistakes point at."""
    root = tmp_path_factory.mktemp("workspace")
    for name, model in (("run", "cbam"), ("other", "se")):
        attnbench("train", "trainer.epochs=1", "logger=none", f"model={model}", f"hydra.run.dir={name}", cwd=root,
                  check=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            for folder in ("images", "empty"):
                (root / folder / split / label).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "images" / split / label / f"{i}.jpg")
    (root / "images" / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "reviews.csv").write_text("body,stars\ngreat food,5\nawful service,1\nfine,3\n")
    # a rating on a continuous scale, as VADER's tables hold it: 30 distinct values
    (root / "ratings.tsv").write_text("text\tlabel\n" + "".join(f"review {i}\t{i / 10 - 1.5:.2f}\n" for i in range(30)))
    (root / "not_a_run").mkdir()
    (root / "cats,dogs").mkdir()
    _write_cifar(root / "cifar_meta_payload", meta={"label_names": _Payload()})
    _write_cifar(root / "cifar_batch_payload", batch={"data": _Payload(), "labels": [0]})
    _write_cifar(root / "cifar_not_a_dict", meta=["airplane", "automobile"])
    _write_cifar(root / "cifar_wrong_shape", batch={"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 0, 1]})
    return root


def _write_cifar(root: Path, meta: object = None, batch: object = None) -> None:
    """A torchvision cifar-10-batches-py folder of 4-image batches, with ``meta`` or the first batch replaced."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        content = {"batch_label": name, "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                   "labels": [0, 1, 0, 1], "filenames": [f"{j}.png" for j in range(4)]}
        (folder / name).write_bytes(pickle.dumps(batch if batch is not None and i == 0 else content, protocol=2))
    meta = meta if meta is not None else {"label_names": ["airplane", "automobile"], "num_cases_per_batch": 4}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _refused(root: Path, *args: str) -> str:
    """Run ``attnbench ARGS`` in ``root``; check the refusal and that nothing on disk changed; return its line."""
    before = _snapshot(root)
    result = attnbench(*args, cwd=root)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert _snapshot(root) == before, "a refused command changed files"
    return lines[0]


CATALOGUE = {
    "unknown model": (["model=cbm"], "unknown model 'cbm'. Did you mean model=cbam?"),
    "unknown data": (["data=cifra"], "unknown data 'cifra'. Did you mean data=cifar?"),
    "unknown backbone": (["backbone=resnet21"], "unknown backbone 'resnet21'"),
    "unknown model in a grid": (["-m", "model=none,cbm"], "unknown model 'cbm'"),
    "misspelt key": (["trainer.lrr=0.1"], "unknown key 'trainer.lrr': did you mean trainer.lr?"),
    "misspelt model key": (["model.reducton=4"], "unknown key 'model.reducton': did you mean model.reduction?"),
    "key the model lacks": (["+model.reducton=4"], "model=cbam has no key 'reducton'"),
    "a grid without -m": (["model=none,se"], "add -m to run a grid"),
    "slot the task lacks": (["model=mha"], "model=mha fills the mixer slot, which backbone=smallcnn lacks"),
    "value of the wrong type": (["trainer.lr=fast"], "trainer.lr: Value 'fast'"),
    "negative learning rate": (["trainer.lr=-0.1"], "trainer.lr must be positive, got -0.1"),
    "zero epochs": (["trainer.epochs=0"], "trainer.epochs must be at least 1, got 0"),
    "a task that does not fit the data": (["task=fewshot"], "task=fewshot cannot train on data=digits, a data set "
                                                            "of the classify task"),
    "an unknown task setting": (["data=glyphs", "+task.shots=5"], "task=fewshot has no key 'shots'"),
    "heads not dividing the width": (["data=reviews", "model=mha", "model.heads=5"],
                                     "heads=5 does not divide the width 128"),
    "impossible pooling size": (["model=kmax", "model.k=17"], "k=17 is larger than the 16 positions it pools"),
    "missing data path": (["data=image_folder", "data.path=nowhere"], "data.path=nowhere does not exist"),
    "a data path that is a file": (["data=image_folder", "data.path=reviews.csv"],
                                   "data.path=reviews.csv is not a folder"),
    "a missing data path in job 2 of a grid": (["-m", "data=image_folder", "data.path=images,nowhere"],
                                               "data=image_folder,data.path=nowhere: data.path=nowhere does not "
                                               "exist"),
    "a path with letters outside ASCII": (["data=image_folder", "data.path=bilder/größe"],
                                          "must be quoted; type 'data.path=\"bilder/größe\"'"),
    "a path with a comma": (["data=image_folder", "data.path=cats,dogs"],
                            "names a path with a comma, which Hydra reads as several values; quote it: "
                            "'data.path=\"cats,dogs\"'"),
    "a comma without -m": (["seed=1,2"], "add -m to run a grid, or, if the comma is part of one value, quote it"),
    "a wrong device": (["trainer.device=banana"], "trainer.device must be auto, cpu, cuda, cuda:N or mps"),
    "a validation fraction of 1": (["data.val_fraction=1.0"], "data.val_fraction must be in [0, 1), got 1.0"),
    "a validation fraction that is not a number": (["data.val_fraction=abc"],
                                                   "data.val_fraction must be a number, got 'abc'"),
    "a reduction that is not a number": (["model.reduction=abc"], "model.reduction must be a whole number"),
    "fractions that leave no training data": (["data.test_fraction=0.95"], "leave nothing to train on"),
    "a negative seed": (["seed=-1"], "seed must be in [0, 4294967295], got -1"),
    "a dropout of 1.5": (["data=reviews", "model=mha", "model.dropout=1.5"], "model.dropout must be in [0, 1)"),
    "an unknown W&B mode": (["logger.mode=sometimes"], "logger.mode=sometimes is not one of auto, online"),
    "empty data folder": (["data=image_folder", "data.path=empty"], "empty/train holds no images"),
    "corrupt image": (["data=image_folder", "data.path=images"], "cannot decode images/train/cat/broken.jpg"),
    "CSV without the named column": (["data=text_file", "data.path=reviews.csv", "data.label_column=stars"],
                                     "has no column 'text' (data.text_column); its columns: body, stars"),
    "labels out of range": (["data=text_file", "data.path=reviews.csv", "data.text_column=body",
                             "data.label_column=stars", "data.classes=[1,5]"],
                            "row 3 has label '3', which is not one of the declared classes 1, 5"),
    "a numeric label column with many values in classification": (
        ["data=text_file", "data.path=ratings.tsv"],
        "column 'label' holds 30 distinct numbers, a rating rather than classes: add data.target=regression"),
    "resume a folder that is not a run": (["resume=not_a_run"], "not_a_run is not an attnbench run directory"),
    "a new run in a finished run's directory": (["hydra.run.dir=run", "model=se"],
                                                "hydra.run.dir=run already holds a run"),
    "a new run in a finished run's directory, same settings": (["hydra.run.dir=other", "model=se"],
                                                               "continue that run with `attnbench train resume=other`"),
    "a grid in a single run's directory": (["-m", "seed=1,2", "hydra.sweep.dir=run"],
                                           "hydra.sweep.dir=run holds a single run, not a grid"),
    "a CIFAR folder whose batches.meta runs code": (["data=cifar", "data.root=cifar_meta_payload"],
                                                    "it names posix.system, which a CIFAR batch never holds"),
    "a CIFAR folder whose data batch runs code": (["data=cifar", "data.root=cifar_batch_payload"],
                                                  "data_batch_1 is not a CIFAR batch: it names posix.system"),
    "a CIFAR batches.meta that is not a dict": (["data=cifar", "data.root=cifar_not_a_dict"],
                                                "batches.meta is not a CIFAR batch: it holds a list, not a dict"),
    "a CIFAR batch of the wrong shape": (["data=cifar", "data.root=cifar_wrong_shape"],
                                         "'data' must be a uint8 array of N rows of 3072 bytes"),
    "resume with other overrides": (["resume=run", "trainer.lr=0.1"], "resume=DIR takes no other overrides"),
    "hydra.job.chdir=true with a relative data.path": (
        ["data=image_folder", "data.path=images", "hydra.job.chdir=true"],
        "hydra.job.chdir=true runs the job inside its run directory, where data.path=images names nothing"),
}


@pytest.mark.parametrize("case", CATALOGUE)
def test_mistake_is_refused_in_one_line(workspace: Path, case: str) -> None:
    args, message = CATALOGUE[case]
    quiet = [] if args[0].startswith("resume=") else ["logger=none"]  # resume= takes no other override
    line = _refused(workspace, "train", *quiet, *args)
    assert message in line, line
    assert not (workspace / "outputs").exists()
    assert not list(workspace.rglob("PWNED"))  # no code from a crafted file ran


@pytest.mark.parametrize("args,message", [
    (["--json", "reviews.csv"], "--json reviews.csv exists; give a new file name"),
    (["--json", "reviews.csv/report.json"], "cannot write the report reviews.csv/report.json"),
    (["trainer.device=banana"], "trainer.device=banana is not a device"),
    (["--device", "banana"], "trainer.device=banana is not a device"),
])
def test_bench_refuses_what_would_fail_after_the_measuring(workspace: Path, args: list[str], message: str) -> None:
    line = _refused(workspace, "bench", "--quick", *args)
    assert message in line, line


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _interrupted_copy(workspace: Path, name: str) -> Path:
    """A copy of ``run`` as a SIGKILL would leave it: checkpoints, no summary.json."""
    copy = workspace / name
    shutil.copytree(workspace / "run", copy)
    (copy / "summary.json").unlink()
    return copy


def test_truncated_checkpoint_is_refused(workspace: Path) -> None:
    run = _interrupted_copy(workspace, "truncated")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert "truncated or not an attnbench checkpoint" in _refused(workspace, "train", "resume=truncated")
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    assert "truncated" in _refused(workspace, "eval", "truncated")


def test_checkpoint_of_another_configuration_is_refused(workspace: Path) -> None:
    run = _interrupted_copy(workspace, "foreign")
    for name in ("last.pt", "best.pt"):
        shutil.copy(workspace / "other" / "checkpoints" / name, run / "checkpoints" / name)
    assert "comes from another configuration" in _refused(workspace, "train", "resume=foreign")
    assert "comes from another configuration" in _refused(workspace, "eval", "foreign")


def test_crafted_pickle_in_a_checkpoint_executes_nothing(workspace: Path) -> None:
    run = _interrupted_copy(workspace, "crafted")
    for name in ("last.pt", "best.pt"):
        torch.save({"model": _Payload()}, run / "checkpoints" / name)
    assert "cannot be loaded" in _refused(workspace, "train", "resume=crafted")
    assert "cannot be loaded" in _refused(workspace, "eval", "crafted")
    assert not list(workspace.rglob("PWNED"))


def test_resume_of_a_checkpoint_missing_a_key_keeps_the_interrupted_summary(workspace: Path) -> None:
    run = _interrupted_copy(workspace, "incomplete")
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    del last["optimizer"]
    torch.save(last, run / "checkpoints" / "last.pt")  # the fingerprint still matches
    (run / "summary.json").write_text('{"status": "interrupted"}\n')
    line = _refused(workspace, "train", "resume=incomplete")
    assert "cannot be resumed: it lacks optimizer" in line, line
    assert (run / "summary.json").read_text() == '{"status": "interrupted"}\n'


@pytest.mark.parametrize("damage", ["best without model", "foreign best", "best weights misfit"])
def test_eval_of_a_damaged_or_foreign_best_checkpoint_is_one_line(workspace: Path, damage: str) -> None:
    name = "eval_" + damage.replace(" ", "_")
    run = _interrupted_copy(workspace, name)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    if damage == "best without model":
        del best["model"]
    elif damage == "foreign best":  # another tool's weights: a plain state dict
        best = {"conv.weight": torch.zeros(4, 3, 3, 3)}
    else:
        best["model"] = {k: torch.zeros(1) for k in best["model"]}
    torch.save(best, run / "checkpoints" / "best.pt")
    line = _refused(workspace, "eval", name)
    assert "best.pt" in line and ("does not fit this run" in line or "another configuration" in line), line


@pytest.mark.parametrize("file,text", [("config.yaml", "model: [unclosed\n"), ("hydra.yaml", "- 3\n"),
                                       ("overrides.yaml", "{a: 1}\n"), ("hydra.yaml", "hydra: {}\n")])
def test_a_run_whose_configuration_is_malformed_is_one_line_for_eval_and_resume(workspace: Path, file: str,
                                                                                text: str) -> None:
    name = f"malformed_{file.split('.')[0]}_{len(text)}"
    run = _interrupted_copy(workspace, name)
    (run / ".hydra" / file).write_text(text)
    for command in (["eval", name], ["train", f"resume={name}"]):
        line = _refused(workspace, *command)
        assert f"{file}" in line and "configuration is damaged" in line and "traceback" not in line, line


def test_resume_of_weights_that_do_not_fit_the_model_leaves_train_log_as_it_was(workspace: Path) -> None:
    run = _interrupted_copy(workspace, "misfit")
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    name = next(iter(last["model"]))
    last["model"][name] = torch.zeros(3, 3)  # the fingerprint still matches: only loading the weights finds it
    torch.save(last, run / "checkpoints" / "last.pt")
    assert "does not fit this run" in _refused(workspace, "train", "resume=misfit")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_resume_of_a_run_this_user_may_not_write_is_refused(workspace: Path) -> None:
    run = _interrupted_copy(workspace, "read_only")
    run.chmod(0o555)
    try:
        line = _refused(workspace, "train", "resume=read_only")
    finally:
        run.chmod(0o755)
    assert "cannot write in read_only: permission denied" in line, line


def test_compare_skips_a_summary_whose_seed_is_a_list(workspace: Path) -> None:
    import json

    run = workspace / "seed_list"
    shutil.copytree(workspace / "run", run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "seed": [0, 1]}))
    before = _snapshot(workspace)
    result = attnbench("compare", "run", "seed_list", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "skipped seed_list/summary.json: unusable: its seed is [0, 1], not a whole number" in result.stderr
    assert _snapshot(workspace) == before
