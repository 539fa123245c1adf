"""``kuaimod review``: the reviewers' web app (Gradio; code in the top-level ``app`` package)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from kuaimod_open.errors import ConfigError
from kuaimod_open.ingest.sample import Sample
from kuaimod_open.judge.policy import Policy
from kuaimod_open.judge.verdict import Verdict
from kuaimod_open.loop.store import DEFAULT_DB


def _router_predictor(path: Path) -> Any:
    """A predictor that loads the first-stage router on first use (the module may not be installed)."""
    loaded: list[Any] = []

    def predict(samples: Sequence[Sample], policy: Policy) -> list[Verdict]:
        if not loaded:
            try:
                from kuaimod_open.first_stage.router import load_router  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                raise ConfigError(
                    "the first-stage router (kuaimod_open.first_stage.router) is not available in this installation; "
                    "start `kuaimod review` with --backend instead"
                ) from None
            loaded.append(load_router(path))
        return list(loaded[0].verdicts(samples, policy))

    return predict


def _backend_predictor(backend: str, model: str | None, base_url: str | None, api_key: str | None) -> Any:
    """A predictor that runs the VLM pipeline; the model is loaded on the first dry run, not at start-up."""
    from kuaimod_open.cli.options import build_backend
    from kuaimod_open.judge.backends.base import GenerateConfig
    from kuaimod_open.judge.pipeline import ModerationConfig, moderate
    from kuaimod_open.judge.prompt import load_template

    loaded: list[Any] = []

    def predict(samples: Sequence[Sample], policy: Policy) -> list[Verdict]:
        if not loaded:
            loaded.append(build_backend(backend, model, None, "auto", "auto", base_url, api_key, 4))
        config = ModerationConfig(frames_dir=Path(".kuaimod/frames"), generate=GenerateConfig(batch_size=4))
        return list(moderate(samples, policy, loaded[0], load_template(), config))

    return predict


@click.command("review")
@click.option("--db", default=DEFAULT_DB, show_default=True, envvar="KUAIMOD_DB", help="Feedback store URL.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Other than loopback needs credentials.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option(
    "--media-root",
    "media_roots",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder videos and frames may be served from (repeatable).",
)
@click.option(
    "--store-media/--no-store-media",
    default=True,
    show_default=True,
    help="Also serve frames from the folders recorded in the store.",
)
@click.option(
    "--policy",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy activated when the store has none yet [default: prompts/policy.yaml].",
)
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--policy-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("policies"),
    show_default=True,
    help="Where saved policy versions are written.",
)
@click.option(
    "--reports",
    "report_roots",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder(s) with evaluation report folders [default: runs/ and eval_report/].",
)
@click.option(
    "--router",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="First-stage router used for policy dry runs.",
)
@click.option(
    "--backend",
    type=click.Choice(["hf", "openai"]),
    default=None,
    help="VLM backend used for policy dry runs (without --router).",
)
@click.option("--model", default=None, help="Model for --backend.")
@click.option("--base-url", default=None, envvar=["KUAIMOD_BASE_URL", "OPENAI_BASE_URL"], help="openai: server URL.")
@click.option("--api-key", default=None, envvar=["KUAIMOD_API_KEY", "OPENAI_API_KEY"], help="openai: API key.")
@click.option(
    "--users-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Accounts, one name:HASH[:admin] a line, chmod 600 (or env KUAIMOD_REVIEW_USERS='alice:HASH,bob:HASH:admin').",
)
@click.option(
    "--hash-password",
    is_flag=True,
    help="Read a password (prompted, not echoed) and print its hash for the users file, then exit.",
)
@click.option(
    "--reviewer",
    default="",
    envvar="KUAIMOD_REVIEWER",
    help="The local operator's name on loopback without accounts [default: the OS login name].",
)
@click.option(
    "--low-confidence",
    type=click.FloatRange(0, 1),
    default=None,
    help="Queue verdicts less confident than this; a setting of the store, shared by every app [default: the "
    "store's, 0.6].",
)
@click.option(
    "--lease",
    "lease_s",
    type=click.FloatRange(10, 86400),
    default=600.0,
    show_default=True,
    help="Seconds an opened item stays claimed by its reviewer (others skip it meanwhile).",
)
@click.option(
    "--embed-precedents/--no-embed-precedents",
    default=False,
    show_default=True,
    help="Embed new precedents with multilingual-e5 (needs the router extra).",
)
@click.option(
    "--load",
    "load_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Record a verdicts.jsonl (from kuaimod moderate) in the store before starting (repeatable).",
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --load: KuaiMod-format rows giving the samples' text and frames.",
)
@click.option("--frames-root", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--demo", is_flag=True, help="Seed a small synthetic queue (frames under .kuaimod/demo/) to try the UI.")
def review_cmd(
    db: str,
    host: str,
    port: int,
    media_roots: tuple[Path, ...],
    store_media: bool,
    policy: Path | None,
    template: Path | None,
    policy_dir: Path,
    report_roots: tuple[Path, ...],
    router: Path | None,
    backend: str | None,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    users_file: Path | None,
    hash_password: bool,
    reviewer: str,
    low_confidence: float | None,
    lease_s: float,
    embed_precedents: bool,
    load_files: tuple[Path, ...],
    data: Path | None,
    frames_root: Path | None,
    demo: bool,
) -> None:
    """Start the review app: queue, decisions, policy editor, evaluation reports.

    \b
    Examples:
      kuaimod review --demo                                   # try it: a synthetic queue in kuaimod.db
      kuaimod review --load out/verdicts.jsonl --media-root clips/
      kuaimod review --hash-password                          # a hash for the users file
      kuaimod review --host 0.0.0.0 --users-file /etc/kuaimod/reviewers --db postgresql+psycopg://...
    """
    from kuaimod_open.app.access import check_access, load_users
    from kuaimod_open.app.config import ReviewConfig

    if hash_password:
        from kuaimod_open.app.access import hash_password as make_hash

        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        click.echo(make_hash(password))
        return
    users = load_users(users_file)
    check_access(host, users)  # before anything is loaded: a refused start costs nothing
    predictor = _router_predictor(router) if router else None
    if predictor is None and backend:
        predictor = _backend_predictor(backend, model, base_url, api_key)
    config = ReviewConfig(
        db=db,
        media_roots=media_roots,
        store_frame_roots=store_media,
        policy_default=policy,
        policy_versions_dir=policy_dir,
        template=template,
        report_roots=report_roots or (Path("runs"), Path("eval_report")),
        predictor=predictor,
        low_confidence=low_confidence,
        lease_s=lease_s,
        use_embedder=embed_precedents,
        default_reviewer=reviewer,
        users=users,
    )
    _prepare_store(config, load_files, data, frames_root, demo)
    click.echo(f"kuaimod review on http://{host}:{port} (store {db}); Ctrl+C stops it")
    from kuaimod_open.app.server import serve

    serve(config, host, port)


def _prepare_store(
    config: Any, load_files: Sequence[Path], data: Path | None, frames_root: Path | None, demo: bool
) -> None:
    from kuaimod_open.app.handlers import ReviewContext
    from kuaimod_open.app.loading import load_verdict_file, seed_demo

    ctx = ReviewContext(config)
    for path in load_files:
        added, samples = load_verdict_file(ctx.store, path, data=data, frames_root=frames_root)
        click.echo(f"{path}: {added} new verdicts for {samples} samples recorded")
    if demo:
        ids = seed_demo(ctx.store, ctx.policy()[0], Path(".kuaimod/demo"))
        click.echo(f"demo queue: {len(ids)} samples in {config.db}")
