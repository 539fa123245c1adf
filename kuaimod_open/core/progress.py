"""The one progress bar of every long command (moderate, eval, cascade, precedents promote, updates).

A bar goes to stderr, so stdout stays clean for results that scripts read. With ``enabled=False``
(``--no-progress``) or nothing to do, the same calls are no-ops, so callers never branch on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class Progress:
    """A progress bar over ``total`` steps, or a silent stand-in when disabled."""

    def __init__(self, total: int | None, *, desc: str, unit: str = "item", enabled: bool = True) -> None:
        self.count = 0
        self._bar: Any = None
        if enabled and total != 0:
            from tqdm import tqdm  # a core dependency; imported here so `import kuaimod_open` stays small

            # smoothing: batch jobs advance in bursts (one batch of verdicts at a time); a longer
            # memory keeps the rate and the estimate from jumping between bursts.
            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def note(self, text: str) -> None:
        """Show a short status beside the bar (e.g. the current stage)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def track(items: Iterable[T], *, total: int | None, desc: str, unit: str = "item", enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while a bar counts them."""
    with Progress(total, desc=desc, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()


__all__ = ["Progress", "track"]
