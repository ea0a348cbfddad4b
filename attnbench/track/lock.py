"""One writer at a time: a lock file in each run directory and each sweep directory.

``<dir>/.attnbench.lock`` holds the pid of the process writing there, and that process holds an exclusive
``flock`` on it for as long as it writes. The kernel drops the ``flock`` when the process ends however it
ends (``SIGKILL`` included), so a lock file left by a dead process is simply taken over; on a file system
without ``flock`` the pid is checked instead. The file is removed when the lock is released, so a directory
looks afterwards exactly as it did before.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import UserError

LOCK_NAME = ".attnbench.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _read_holder(fd: int) -> tuple[int | None, str]:
    """The pid and what it writes ("run", "sweep") that a lock file records."""
    try:
        text = os.pread(fd, 128, 0).decode(errors="replace").split()
        return (int(text[0]) if text else None), (text[1] if len(text) > 1 else "")
    except (OSError, ValueError):
        return None, ""


class DirectoryLock:
    """``with DirectoryLock(folder, what):`` — refused in one line naming the holder's pid while another live
    process holds the lock of ``folder``. ``what`` says in that line what the folder is ("run", "sweep")."""

    def __init__(self, folder: Path, what: str = "run") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def _refuse(self, fd: int) -> UserError:
        pid, what = _read_holder(fd)
        os.close(fd)
        holder = f"attnbench pid {pid}" if pid else "another attnbench process"
        return UserError(f"{self.folder} is in use: {holder} is writing {'its ' + what if what else 'there'} now; "
                         f"wait for it to end (or stop it), then run the command again")

    def acquire(self) -> DirectoryLock:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._refuse(fd) from None
            except OSError as e:  # no flock on this file system: the pid written in the file decides
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                pid, _ = _read_holder(fd)
                if pid and pid != os.getpid() and _alive(pid):
                    raise self._refuse(fd) from None
            # the previous holder may have removed the file between our open and our lock: lock the file
            # that is there now
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
