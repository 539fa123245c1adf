"""One updater run at a time per output folder: cron may start a run while the last one still works.

The lock is a kernel lock (``fcntl.flock``) on ``folder/.<command>.lock``, not the file's existence:
the kernel releases it when its holder exits, however it exits (a SIGKILL, an OOM kill, a power cut
of a container), and two runs can never both take it. The file itself stays; it only records the
holder's pid for the error message.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kuaimod_open.errors import ConfigError


@contextmanager
def run_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold the kernel lock on ``folder/.<command>.lock`` for the duration of the block.

    Raises:
        ConfigError: another process holds the lock (a run of ``command`` on this folder is going on).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{command.replace(' ', '-')}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise ConfigError(
                f"another `kuaimod {command}` is running on {folder} (pid {holder}); wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
