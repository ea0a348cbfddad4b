"""One writer at a time: a lock file in each run directory and each sweep directory.

``<dir>/.attnbench.lock`` holds the pid of the process writing there, and that process holds an exclusive
``flock`` on it for as long as it writes. The kernel drops the ``flock`` when the process ends however it
ends (``SIGKILL`` included), so a lock file left by a dead process is simply taken over; on a file system
without ``flock`` the pid is checked instead. The file is removed when the lock is released, so a directory
looks afterwards exactly as it did before.

A ``flock`` belongs to the open file, which a forked child (a decode worker, a DataLoader worker) shares:
children close their copy as they start, so the lock is the owner's alone, and a lock whose recorded owner
is dead is taken over even while some other process still has the file open. The lock file is opened
without following a symbolic link and must be a plain file of its own: a link put there is refused, never
written through.
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


_held: set[DirectoryLock] = set()  # the locks this process holds, closed in its forked children


def _close_in_child() -> None:
    """In a forked child: close the inherited lock files (closing a copy leaves the parent's ``flock`` alone)."""
    for lock in list(_held):
        if lock.fd is not None:
            os.close(lock.fd)
            lock.fd = None
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def _owner_gone(fd: int) -> bool:
    """The lock is held, but the pid it records is dead: a child that outlived its owner holds the open file.
    Read twice, apart, so that a new owner between its ``flock`` and the writing of its pid is not mistaken."""
    import time

    pid, _ = _read_holder(fd)
    if not pid or pid == os.getpid() or _alive(pid):
        return False
    time.sleep(0.05)
    return _read_holder(fd)[0] == pid


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
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not _owner_gone(fd):
                    raise self._refuse(fd) from None
                # its owner is dead: the file goes, and the next round locks a fresh one
                if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    os.unlink(self.path)
                os.close(fd)
                continue
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
                current = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        self.fd = fd
        _held.add(self)
        return self

    def _open(self) -> int:
        """The lock file, opened without following a symbolic link; anything but a plain file of its own
        (a link, a hard link to another file, a folder, a FIFO) is refused before a byte is written."""
        import stat

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise self._foreign("a symbolic link" if e.errno == errno.ELOOP else "not a plain file") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise self._foreign("not a plain file" if not stat.S_ISREG(st.st_mode) else "a hard link to another file")
        return fd

    def _foreign(self, what: str) -> UserError:
        return UserError(f"{self.path} is {what}, which attnbench never makes there; it was left untouched: "
                         f"remove it (or write elsewhere), then run the command again")

    def release(self) -> None:
        if self.fd is None:
            return
        _held.discard(self)
        try:
            if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
