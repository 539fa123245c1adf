"""The openai path: whole batches vs a sliding window of requests, against a server with uneven latency.

    python bench/openai_window.py --videos 64 --concurrency 8 --latency 0.4:1.0 --rounds 2

A continuously batching server (vLLM, SGLang) starts each request when it arrives and answers it when
its own generation ends; answers of 400 to 1,024 tokens end at very different times. The test server
(``kuaimod_open.serving.openai_compat``) is given that shape: each request waits a delay drawn from
LOW..HIGH seconds, fixed by the request's content (the same sample waits the same in both modes) and
slept concurrently; the model behind it is an instant scripted answer. Both clients are the same
``OpenAIBackend``; "batch" hides its sliding window so the pipeline sends ``concurrency`` requests and
waits for all of them before the next batch (the behaviour before issue #18), "window" keeps
``concurrency`` in flight over the whole run. Modes alternate within each round; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import uvicorn  # noqa: E402
from helpers import verdict_json  # noqa: E402

from kuaimod_open.ingest.sample import Sample  # noqa: E402
from kuaimod_open.judge.backends.base import GenerateConfig, Generation, Request  # noqa: E402
from kuaimod_open.judge.backends.openai_api import OpenAIBackend  # noqa: E402
from kuaimod_open.judge.backends.scripted import ScriptedBackend  # noqa: E402
from kuaimod_open.judge.pipeline import ModerationConfig, moderate  # noqa: E402
from kuaimod_open.judge.policy import default_policy_path, load_policy  # noqa: E402
from kuaimod_open.judge.prompt import build_messages, load_template  # noqa: E402
from kuaimod_open.serving.openai_compat import create_openai_app, request_delay  # noqa: E402


class BatchOnly:
    """The same client without its window: the pipeline falls back to whole batches."""

    def __init__(self, inner: OpenAIBackend) -> None:
        self.inner, self.model_id, self.adapter = inner, inner.model_id, inner.adapter

    def generate(self, requests: Sequence[Request], config: GenerateConfig) -> list[Generation]:
        return self.inner.generate(requests, config)


def serve(latency: tuple[float, float]) -> tuple[uvicorn.Server, str]:
    answer = ScriptedBackend(default=verdict_json("BENIGN"), model_id="bench-model")
    app = create_openai_app(answer, "bench-model", latency=latency)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", default="0.4:1.0", help="LOW:HIGH seconds per answer")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    low, high = (float(x) for x in args.latency.split(":"))
    policy, template = load_policy(default_policy_path()), load_template()
    samples = [Sample(id=f"v{i:04d}", title=f"视频 {i}", asr=f"第{i}条") for i in range(args.videos)]
    config = ModerationConfig(generate=GenerateConfig(max_new_tokens=1024, batch_size=args.concurrency))

    # The delays the server will apply, from the same messages the client sends (frames: none here).
    probe = OpenAIBackend("bench-model", base_url="http://unused/v1")
    delays = []
    for s in samples:
        messages = [probe._to_openai(m) for m in build_messages(s, policy, template)]
        delays.append(request_delay(messages, (low, high)))
    batches = [delays[i : i + args.concurrency] for i in range(0, len(delays), args.concurrency)]
    ideal_batch = sum(max(b) for b in batches)
    ideal_window = max(sum(delays) / args.concurrency, max(delays))

    server, url = serve((low, high))
    results: dict[str, list[float]] = {"batch": [], "window": []}
    try:
        for _ in range(args.rounds):
            for mode in ("batch", "window"):
                client = OpenAIBackend("bench-model", base_url=url, concurrency=args.concurrency, max_retries=0)
                backend = BatchOnly(client) if mode == "batch" else client
                started = time.perf_counter()
                verdicts = list(moderate(samples, policy, backend, template, config))
                elapsed = time.perf_counter() - started
                assert [v.sample_id for v in verdicts] == [s.id for s in samples]
                assert all(v.error is None for v in verdicts), [v.error for v in verdicts if v.error][:3]
                results[mode].append(elapsed)
    finally:
        server.should_exit = True

    print(
        f"{args.videos} requests, {args.concurrency} in flight, per-request latency {low}-{high} s "
        f"(mean {statistics.fmean(delays):.2f} s), {args.rounds} rounds\n"
    )
    print("| client | wall s (median) | videos/s | lower bound from the delays |")
    print("|---|---:|---:|---:|")
    for mode, bound in (("batch", ideal_batch), ("window", ideal_window)):
        wall = statistics.median(results[mode])
        print(f"| {mode} | {wall:.2f} | {args.videos / wall:.2f} | {bound:.2f} s |")
    speedup = statistics.median(results["batch"]) / statistics.median(results["window"])
    print(f"\nwindow / batch throughput: {speedup:.2f}x")


if __name__ == "__main__":
    main()
