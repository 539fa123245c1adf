"""Where the shipped prompt and policy files live."""

from __future__ import annotations

import os
from pathlib import Path

from kuaimod_open.errors import ConfigError

# prompts/ ships inside the package (kuaimod_open/prompts, a link to the repository's prompts/ folder
# in a checkout, real files in a wheel); a deployment can point KUAIMOD_PROMPTS_DIR at its own copy.
_REPO_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def prompts_dir() -> Path:
    """The folder holding ``policy.yaml`` and the prompt templates."""
    env = os.environ.get("KUAIMOD_PROMPTS_DIR")
    path = Path(env) if env else _REPO_PROMPTS
    if not path.is_dir():
        raise ConfigError(
            f"Prompt folder not found: {path}. Set KUAIMOD_PROMPTS_DIR to a folder with policy.yaml and "
            "moderation.md, or pass --policy/--template explicitly (an editable install, "
            "`pip install -e .`, finds the repository's prompts/ folder)."
        )
    return path
