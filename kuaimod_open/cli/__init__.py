"""The ``kuaimod`` command line: a thin wrapper over the library, one module per command group."""

from __future__ import annotations

import sys

import click

from kuaimod_open import __version__
from kuaimod_open.cli.bank import bank_group
from kuaimod_open.cli.confidence import calibrate_confidence_cmd
from kuaimod_open.cli.evaluate import eval_cmd, policy_group
from kuaimod_open.cli.feedback import feedback_group, history_cmd, precedents_group, rollback_cmd
from kuaimod_open.cli.moderate import moderate_cmd, tiny_model_cmd
from kuaimod_open.cli.queue import queue_cmd
from kuaimod_open.cli.review import review_cmd
from kuaimod_open.cli.router import cascade_cmd, train_router_cmd
from kuaimod_open.cli.serve import openai_server_cmd, serve_cmd
from kuaimod_open.cli.update import update_group
from kuaimod_open.errors import KuaimodError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="kuaimod")
def cli() -> None:
    """kuaimod_open: short-video content moderation with a VLM as policy."""


cli.add_command(moderate_cmd)
cli.add_command(tiny_model_cmd)
cli.add_command(serve_cmd)
cli.add_command(openai_server_cmd)
cli.add_command(eval_cmd)
cli.add_command(policy_group)
cli.add_command(update_group)
cli.add_command(review_cmd)
cli.add_command(queue_cmd)
cli.add_command(feedback_group)
cli.add_command(precedents_group)
cli.add_command(rollback_cmd)
cli.add_command(history_cmd)
cli.add_command(train_router_cmd)
cli.add_command(cascade_cmd)
cli.add_command(calibrate_confidence_cmd)
cli.add_command(bank_group)


def main() -> None:
    """Entry point: expected errors print one clear line (no traceback) and exit with status 2."""
    try:
        cli.main(prog_name="kuaimod", auto_envvar_prefix="KUAIMOD", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KuaimodError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
