"""How a training command becomes processes: torchrun for one run on several GPUs, Hydra's launchers for grids.

* ``torchrun --nproc_per_node=N -m attnbench train …``, or ``attnbench train trainer.devices=N`` (which starts
  torchrun): every rank runs the whole Hydra application. Before Hydra starts they join the process group
  and take rank 0's run and sweep directories (Hydra's ``${now:}`` differs per process); ``.hydra/`` and
  ``train.log`` are written by rank 0 only, and the other ranks print nothing.
* ``hydra/launcher=submitit_slurm`` (or ``submitit_local``): one SLURM job per grid point; a job with
  ``trainer.devices=N`` gets N tasks from submitit (never torchrun inside it), which join the process group
  from the SLURM environment. On submitit's preemption/time-limit signal the job saves a checkpoint,
  records ``interrupted`` and hands over to submitit's checkpoint hook, which requeues the same job: it
  comes back through ``job.run_job``, which resumes interrupted runs as a rerun of the sweep does.
* ``hydra/launcher=joblib``: parallel jobs on one machine, each pinned to GPU ``job number % visible GPUs``
  and to its share of the CPU threads.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from .errors import UserError
from .signals import preemption_signal

# torch is imported inside the functions: the CLI imports this module at start (the resolver), also for
# `attnbench list` and `--help`, which should not pay for torch

# hydra/launcher configs shipped in conf/ and the plugin that runs each (the `cluster` extra)
PLUGINS = {"submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
           "submitit_local": "hydra_plugins.hydra_submitit_launcher",
           "joblib": "hydra_plugins.hydra_joblib_launcher"}


def process_rank() -> int:
    """This process's rank as its launcher announced it, readable before the process group exists."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        return submitit.JobEnvironment().global_rank
    return 0


def _rank_zero(value: Any) -> Any:
    return value if process_rank() == 0 else None


def _jobs_at_once() -> int:
    import torch

    return torch.cuda.device_count() or -1  # joblib's -1: one per CPU core


def register_resolvers() -> None:
    """``${attnbench.rank_zero:X}`` is X on rank 0 and null elsewhere (conf/config.yaml gives it to
    ``hydra.output_subdir``: Hydra runs in every rank, only rank 0 writes ``.hydra/``).
    ``${attnbench.jobs_at_once:}`` is the number of visible GPUs, or -1 (one per CPU core) without any
    (the joblib launcher's ``n_jobs``)."""
    for name, resolver in (("attnbench.rank_zero", _rank_zero), ("attnbench.jobs_at_once", _jobs_at_once)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()  # before Hydra resolves anything in any process that runs jobs (ranks, submitit, joblib)


# ---------------------------------------------------------------------------------------- before Hydra


def launcher_name(cfg: DictConfig) -> str:
    """The hydra/launcher a composed job configuration (with its Hydra node) runs under."""
    return cfg.hydra.runtime.choices.get("hydra/launcher") or "basic"


def check(cfg: DictConfig, multirun: bool) -> None:
    """Refuse combinations of processes and launchers that cannot work, with the way to run them instead.
    ``cfg`` is a job's configuration with its Hydra node."""
    from .engine import distributed

    launcher = launcher_name(cfg)
    module = PLUGINS.get(launcher)
    if module is not None:
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"hydra/launcher={launcher} needs the launcher plugins: pip install 'attnbench[cluster]'") \
                from None
    devices, world = cfg.trainer.devices, distributed.launched_world()
    if world.distributed and not os.environ.get("SUBMITIT_EXECUTOR"):  # under torchrun
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        if devices not in (1, local):
            raise UserError(f"trainer.devices={devices} but torchrun started {local} processes on this machine; "
                            f"drop trainer.devices or make it match --nproc_per_node")
        if multirun and launcher != "basic":
            raise UserError(f"under torchrun the jobs of a grid run one after another on all ranks; drop "
                            f"hydra/launcher={launcher}")
    if devices > 1 and launcher == "joblib":
        raise UserError("hydra/launcher=joblib runs one-process jobs side by side; for trainer.devices>1 use the "
                        "default launcher (jobs one after another, each on all GPUs) or submitit_slurm")
    if devices > 1 and not world.distributed and launcher == "basic" and distributed.uses_cuda(cfg.trainer.device):
        import torch

        if devices > torch.cuda.device_count():
            raise UserError(f"trainer.devices={devices} but {torch.cuda.device_count()} GPU(s) are visible")


def needs_torchrun(devices: int, launcher: str = "basic") -> bool:
    """``trainer.devices>1`` on the default launcher, in a process no launcher started: start torchrun."""
    from .engine import distributed

    return devices > 1 and launcher == "basic" and not distributed.launched_world().distributed


def start_torchrun(devices: int, args: list[str]) -> NoReturn:
    """Replace this process by ``torchrun --standalone --nproc_per_node=DEVICES -m attnbench train ARGS``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, cpus // devices)))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}",
               "-m", "attnbench", "train", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)


def _quiet() -> None:
    """Ranks other than 0 print nothing: rank 0 speaks for the run (errors still reach stderr)."""
    from .track.console import console

    console.quiet = True
    sys.stdout = open(os.devnull, "w")  # for the life of the process: Hydra's own messages too


def join_torchrun(device: str) -> None:
    """Under torchrun: join the process group (``device`` is ``trainer.device``); ranks other than 0 go quiet."""
    from .engine import distributed

    world = distributed.launched_world()
    if world.distributed:
        distributed.init(world, device)
        if not world.main:
            _quiet()


def agreed_directories(cfg: DictConfig) -> tuple[str, str]:
    """The run and sweep directories of a composed job (with its Hydra node), resolved once: ``${now:}`` is
    read here and ``directory_overrides`` hands the result to Hydra, so the directory the CLI checked and
    locked is the one Hydra writes in. Under torchrun every rank takes rank 0's (each process would resolve
    ``${now:}`` at its own time)."""
    from .engine import distributed

    found = str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)
    if not distributed.current().distributed:
        return found
    run_dir, sweep_dir = distributed.broadcast_object(list(found))
    return run_dir, sweep_dir


def directory_overrides(run_dir: str, sweep_dir: str) -> list[str]:
    return [f"hydra.run.dir={override_value(run_dir)}", f"hydra.sweep.dir={override_value(sweep_dir)}"]


def override_value(text: str) -> str:
    """``text`` as a Hydra override value (quoted when it holds characters the grammar would read)."""
    if re.fullmatch(r"[\w./:+-]+", text, re.ASCII):  # the grammar's unquoted characters: ASCII only
        return text
    # in Hydra's quoted strings a backslash escapes only a quote, or the backslashes before a quote (the
    # closing one too): doubling every backslash would name another directory (a\nb would become a\\nb)
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    return "'" + re.sub(r"\\+$", lambda m: m.group(0) * 2, escaped) + "'"


def leave() -> None:
    from .engine import distributed

    distributed.shutdown()


# ---------------------------------------------------------------------------------------- inside a job


def _parallel_jobs(n_jobs: int) -> int:
    """How many jobs joblib runs at once for ``n_jobs`` (-1: one per CPU, -2: all but one, …)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, n_jobs if n_jobs > 0 else cpus + 1 + n_jobs)


def _pin(cfg: DictConfig, job_number: int, n_jobs: int) -> None:
    """A joblib job: GPU ``job_number % visible GPUs`` and its share of the CPU threads."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cpus // _parallel_jobs(n_jobs)))
    if cfg.trainer.device in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(job_number % torch.cuda.device_count())  # trainer.device=auto|cuda uses it


def drop_log_file() -> None:
    """Close and drop the root logger's file handlers: other ranks leave ``train.log`` to rank 0 (Hydra gave
    every process the handler; it opens lazily), and a job that ends takes its ``train.log`` with it, so what
    is logged after it (the next job's launch) does not land there."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


def _raise_interrupted(signum: int, frame: Any) -> None:
    from .engine import Interrupted

    raise Interrupted(signum)


@contextmanager
def job(cfg: DictConfig, hydra_cfg: DictConfig) -> Iterator[None]:
    """Around one Hydra job: the process group of a multi-task submitit job, the pinning of a joblib job,
    quiet and file-less ranks other than 0, and submitit's preemption signal outside the training loop
    (there it stops the job where it is, the last checkpoint at most an epoch old; inside, the trainer
    saves one first)."""
    from .engine import distributed

    started_group = False
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            distributed.init(distributed.launched_world(), cfg.trainer.device)
            started_group = True
    if "JoblibLauncher" in str(hydra_cfg.launcher.get("_target_", "")):
        _pin(cfg, hydra_cfg.job.num, hydra_cfg.launcher.n_jobs)
    if process_rank() != 0:
        drop_log_file()
        if started_group:
            from .track.console import console

            console.quiet = True  # submitit keeps each task's output in its own log; rank 0's is the run's
    preemption = preemption_signal()
    previous = signal.signal(preemption, _raise_interrupted) if preemption else None
    try:
        yield
    finally:
        if preemption:
            signal.signal(preemption, previous)
        if started_group:
            distributed.shutdown()


def requeue_if_preempted(signum: int) -> None:
    """A job stopped by submitit's preemption/time-limit signal: call submitit's own handler, which dumps the
    same job (launcher ``checkpoint``), requeues it and exits; the requeued job resumes from
    ``checkpoints/last.pt`` through ``job.run_job``. Any other signal: nothing."""
    if signum != preemption_signal():
        return
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)
