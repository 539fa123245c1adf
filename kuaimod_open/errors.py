"""The one small exception hierarchy of kuaimod_open.

Every message says what went wrong *and* how to fix it. The CLI prints these without a
traceback (they are expected errors); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class KuaimodError(Exception):
    """Base class for all expected, user-facing errors."""


class ConfigError(KuaimodError):
    """A bad flag, config value or input path."""


class PolicyError(KuaimodError):
    """The policy file is missing or invalid. The message names the file, the line and the field."""


class PromptError(KuaimodError):
    """A prompt template is missing, has unknown placeholders, or does not use a required one."""


class InputError(KuaimodError):
    """One input (video, frame image, data row) cannot be read. Per-sample: becomes an error verdict."""


class BackendError(KuaimodError):
    """A model backend could not be loaded or failed for a whole batch."""


class MissingDependencyError(KuaimodError):
    """An optional package is not installed; the message gives the pip command that installs it."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        self.package = package
        self.extra = extra
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"The optional package '{package}' is not installed{why}. "
            f"Install it with: pip install 'kuaimod_open[{extra}]'"
        )
