"""Exceptions raised by softprompt.

Every error a user can cause has its own type and a message that names the problem and the
fix. Catch :class:`SoftPromptError` to handle all of them; the CLI prints the message alone,
without a traceback.
"""

from __future__ import annotations


class SoftPromptError(Exception):
    """Base class of every error softprompt raises on purpose."""


class ConfigError(SoftPromptError, ValueError):
    """An option or configuration value is invalid (unknown name, out of range, clash)."""


class DataError(SoftPromptError, ValueError):
    """A data file or example is missing, malformed or inconsistent with its task."""


class TemplateError(DataError):
    """A template is malformed or refers to a field the examples do not have."""


class UnknownLabelError(DataError):
    """An example carries a label the verbalizer does not know."""


class PromptFileError(SoftPromptError, ValueError):
    """A saved prompt is missing, truncated, corrupt or of the wrong shape."""


class ModelMismatchError(SoftPromptError, ValueError):
    """A saved prompt was trained for a different model than the one it is used with."""


class ModelLoadError(SoftPromptError, RuntimeError):
    """A model could not be found or loaded."""


class RequestTooLargeError(SoftPromptError, ValueError):
    """A request exceeds a stated limit (batch size, text length, number of inputs)."""


class ArtifactError(PromptFileError):
    """A saved artifact (prompt, prefix, demonstrations, model, checkpoint) is malformed, holds
    values that cannot be used (NaN, integers, the wrong shape), or lies outside the allowed folder."""


def nearest(name, known) -> str | None:
    """The one of ``known`` closest to ``name`` (difflib's ratio, at least 0.6), or None: what a
    message offers as "did you mean"."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return close[0] if close else None


def with_suggestions(unknown, known) -> str:
    """``unknown`` names joined for a message, each followed by the nearest of ``known`` where one
    is close: ``'lerning_rate' (did you mean 'learning_rate'?), 'foo'``."""
    return ", ".join(f"{name!r} (did you mean {close!r}?)" if (close := nearest(name, known)) else repr(name)
                     for name in unknown)
