"""A batch job run in a subprocess by tests/test_runner.py, so that it can be killed with SIGKILL.

usage: python tests/job_script.py MANIFEST OUT [WORKERS] [DELAY_S]
The scripted backend answers every request after DELAY_S seconds, like a slow model would.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers import verdict_json  # noqa: E402

from kuaimod_open.ingest.manifest import load_manifest  # noqa: E402
from kuaimod_open.judge.backends.base import GenerateConfig  # noqa: E402
from kuaimod_open.judge.backends.scripted import ScriptedBackend  # noqa: E402
from kuaimod_open.judge.pipeline import ModerationConfig  # noqa: E402
from kuaimod_open.judge.policy import default_policy_path, load_policy  # noqa: E402
from kuaimod_open.judge.prompt import load_template  # noqa: E402
from kuaimod_open.serving.runner import RunnerConfig, run_job  # noqa: E402


def main() -> None:
    manifest, out = Path(sys.argv[1]), Path(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.02

    def answer(request: object) -> str:
        time.sleep(delay)
        return verdict_json("BENIGN")

    config = ModerationConfig(frames=2, frames_dir=out.with_name("frames"), generate=GenerateConfig(batch_size=4))
    summary = run_job(
        load_manifest(manifest),
        load_policy(default_policy_path()),
        ScriptedBackend(default=answer),
        load_template(),
        out,
        config,
        RunnerConfig(workers=workers, progress=False),
    )
    print(f"written={summary.written} skipped={summary.skipped}")


if __name__ == "__main__":
    main()
