"""A backend that plays back queued answers: for tests and for dry runs without a model."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

from kuaimod_open.judge.backends.base import GenerateConfig, Generation, Request

Script = str | Generation | Callable[[Request], str | Generation]


class ScriptedBackend:
    """Returns queued outputs in order (a callable is called with the request).

    Every request it receives is kept in ``history``. When the queue is empty it answers with
    ``default`` if one was given, else with an error Generation (never a silent "allow").
    """

    adapter: str | None = None

    def __init__(
        self, outputs: Iterable[Script] = (), *, default: Script | None = None, model_id: str = "scripted"
    ) -> None:
        self.model_id = model_id
        self.queue: deque[Script] = deque(outputs)
        self.default = default
        self.history: list[Request] = []
        self.batches: list[int] = []

    def enqueue(self, *outputs: Script) -> None:
        """Add answers to the end of the queue."""
        self.queue.extend(outputs)

    def generate(self, requests: Sequence[Request], config: GenerateConfig) -> list[Generation]:
        """Answer each request with the next scripted output."""
        self.batches.append(len(requests))
        results = []
        for request in requests:
            self.history.append(request)
            script = self.queue.popleft() if self.queue else self.default
            if script is None:
                results.append(Generation(error="scripted backend: no output queued"))
                continue
            answer = script(request) if callable(script) else script
            results.append(answer if isinstance(answer, Generation) else Generation(text=answer))
        return results
