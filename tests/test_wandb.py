"""W&B as users read it: the offline run's summary equals summary.json, W&B's environment is respected and
an explicit logger.* override wins over it. Read back from the .wandb file with W&B's own protobuf records."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runner import assert_wandb_agrees, attnbench, run_dirs, wandb_records, wandb_run, wandb_summary


def test_default_run_summary_equals_summary_json_and_env_names_the_run(tmp_path: Path) -> None:
    attnbench("train", "trainer.epochs=2", "trainer.log_every=5", cwd=tmp_path, check=True,
              env={"WANDB_PROJECT": "p", "WANDB_NAME": "n", "WANDB_TAGS": "mine,ours"})
    [run] = run_dirs(tmp_path / "outputs")
    w = assert_wandb_agrees(run)
    val = [line for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val/acc" in line]
    best = max(val, key=lambda line: line["val/acc"])  # the first of equals, as the trainer keeps it
    assert w["epoch"] == 2 and w["best_epoch"] == best["epoch"] and w["val/acc"] == best["val/acc"]
    record = wandb_run(run)
    assert (record.project, record.display_name, record.job_type) == ("p", "n", "train")
    assert {"mine", "ours", "model=cbam", "backbone=smallcnn"} <= set(record.tags)
    config = {item.key: json.loads(item.value_json) for item in record.config.update}
    assert config["choices"] == {"data": "digits", "task": "classify", "backbone": "smallcnn", "model": "cbam",
                                 "trainer": "default", "logger": "wandb"}
    metrics = [r.metric for r in wandb_records(run) if r.WhichOneof("record_type") == "metric"]
    assert any(m.name == "val/acc" and m.step_metric == "epoch" and m.summary.max for m in metrics)
    steps = [r.history for r in wandb_records(run) if r.WhichOneof("record_type") == "history"
             and any(i.nested_key == ["step/loss"] for i in r.history.item)]
    assert [h.step.num for h in steps][:3] == [5, 10, 15]  # per-step loss at trainer.log_every

    # `attnbench eval` is a W&B run of its own, job_type eval, holding the test metrics it measured
    attnbench("eval", str(run), cwd=tmp_path, check=True)
    [evaluated] = [f for f in run.glob("wandb/offline-run-*/*.wandb") if wandb_run(f).job_type == "eval"]
    assert wandb_run(evaluated).display_name == "eval trainer.epochs=2,trainer.log_every=5"
    assert wandb_summary(evaluated)["test/acc"] == w["test/acc"]


def test_wandb_mode_disabled_writes_no_wandb_folder_and_explicit_logger_overrides_win(tmp_path: Path) -> None:
    attnbench("train", "trainer.epochs=1", "hydra.run.dir=off", cwd=tmp_path, check=True,
              env={"WANDB_MODE": "disabled"})
    assert (tmp_path / "off" / "summary.json").exists() and not (tmp_path / "off" / "wandb").exists()
    # logger.* on the command line beats WANDB_*: this one logs offline, into project q, under WANDB_DIR
    attnbench("train", "trainer.epochs=1", "hydra.run.dir=on", "logger.mode=offline", "logger.project=q",
              "logger.log_checkpoints=best", cwd=tmp_path, check=True,
              env={"WANDB_MODE": "disabled", "WANDB_PROJECT": "p", "WANDB_DIR": str(tmp_path / "elsewhere")})
    assert not (tmp_path / "on" / "wandb").exists() and wandb_run(tmp_path / "elsewhere").project == "q"
    records = wandb_records(tmp_path / "elsewhere")
    [artifact] = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert artifact.type == "model" and "best" in artifact.aliases


def test_misspelt_modes(tmp_path: Path) -> None:
    """logger.mode=onlin: one line naming the nearest mode, exit 2, no run folder; a misspelt WANDB_MODE is
    one warning and the default behaviour."""
    result = attnbench("train", "logger.mode=onlin", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: logger.mode=onlin is not one of auto, online, offline, disabled: did you mean logger.mode=online?"]
    assert not (tmp_path / "outputs").exists()
    result = attnbench("train", "trainer.epochs=1", cwd=tmp_path, env={"WANDB_MODE": "ofline"}, check=True)
    [warning] = [line for line in result.stdout.splitlines() if "WANDB_MODE" in line]
    assert "did you mean offline?" in warning and "offline in" in result.stdout  # auto, not logged in


def test_login_is_decided_by_wandb_for_the_server_in_wandb_base_url(tmp_path: Path) -> None:
    """A netrc entry for a self-hosted server counts as logged in there (and only there)."""
    import subprocess
    import sys

    (tmp_path / ".netrc").write_text(f"machine wandb.example.com\n  login user\n  password {'a' * 40}\n")
    (tmp_path / ".netrc").chmod(0o600)
    found = {}
    for url in ("https://wandb.example.com", "https://api.wandb.ai"):
        found[url] = subprocess.run(
            [sys.executable, "-c", "from attnbench.track.wandb_logger import _logged_in; print(_logged_in())"],
            env={**os.environ, "HOME": str(tmp_path), "WANDB_BASE_URL": url}, capture_output=True, text=True,
            check=True).stdout.strip()
    assert found == {"https://wandb.example.com": "True", "https://api.wandb.ai": "False"}



def test_long_group_is_cut_with_a_hash_and_a_short_run_still_logs_step_loss(tmp_path: Path) -> None:
    """A group over W&B's 128 characters (own-data overrides) becomes 128 with a stable hash, the whole text in
    the config; a run shorter than trainer.log_every steps logs step/loss once per epoch; the attention
    image (figures/attention) and the attention record (attention) keep keys of their own."""
    overrides = ["trainer.epochs=2", "trainer.lr=0.0123456789", "trainer.weight_decay=0.000123456789",
                 "trainer.label_smoothing=0.0123456789", "trainer.warmup_epochs=0", "trainer.eval_batch_size=256"]
    for folder in ("a", "b"):  # two seeds of one setting
        attnbench("train", *overrides, f"seed={ord(folder) - 97}", f"hydra.run.dir={folder}", cwd=tmp_path,
                  check=True)
    first, second = wandb_run(tmp_path / "a"), wandb_run(tmp_path / "b")
    config = {item.key: json.loads(item.value_json) for item in first.config.update}
    assert len(config["group"]) > 128 and len(first.run_group) == 128
    assert first.run_group == second.run_group and first.run_group[:100] == config["group"][:100]

    records = wandb_records(tmp_path / "a")
    steps = [r.history.step.num for r in records if r.WhichOneof("record_type") == "history"
             and any(i.nested_key == ["step/loss"] for i in r.history.item)]
    per_epoch = json.loads((tmp_path / "a" / "summary.json").read_text())["step"] // 2
    assert per_epoch < 50 and steps == [per_epoch, 2 * per_epoch]  # log_every is 50: once at each epoch's end
    images = {"/".join(i.nested_key) or i.key for r in records if r.WhichOneof("record_type") == "history"
              for i in r.history.item}
    assert any(key.startswith("figures/attention") for key in images), images
    assert isinstance(wandb_summary(tmp_path / "a")["attention"], dict)  # the record, not overwritten by an image
