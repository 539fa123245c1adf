"""One updater run at a time per output folder: cron may start a run while the last one still works."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kuaimod_open.errors import ConfigError


@contextmanager
def run_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder/.<command>.lock`` (with our pid) for the duration; a lock of a dead process is taken over.

    Raises:
        ConfigError: another live process holds the lock.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f".{command.replace(' ', '-')}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if _holder_alive(lock):
                raise ConfigError(
                    f"another `kuaimod {command}` is running ({lock} exists); wait for it, or delete the file "
                    "if that run is gone"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process died
    else:
        raise ConfigError(f"cannot take the lock {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _holder_alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().strip() or 0)
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return pid > 0
