"""Loading what any method saved (``best/``, ``last/``): the method rebuilt and restored.

A prompt-tuning output is a :class:`~softprompt.prompt.SoftPrompt` and loads as one. Other methods
(prefix tuning, in-context demonstrations, full model tuning) save ``softprompt.json`` with their
name and training options beside their own files; :func:`load_saved_method` rebuilds the method
from those options on a backbone and restores it with :meth:`Method.load_state`, so
``softprompt eval``/``predict`` and :class:`~softprompt.api.PromptedModel` can use any of them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import ModelMismatchError, PromptFileError
from ..prompt import META_FILE


def read_saved_metadata(path: str | Path) -> dict[str, Any]:
    """The ``softprompt.json`` of a saved output directory (a clear error if absent or unreadable)."""
    file = Path(path) / META_FILE
    if not file.exists():
        raise PromptFileError(f"nothing saved by softprompt at {path}: expected {META_FILE} there "
                              "(pass a run's best/ or last/ folder, e.g. runs/rt/best)")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PromptFileError(f"{file} is unreadable ({exc}); re-save it or train again") from exc


def load_saved_method(path: str | Path, backbone, task):
    """Rebuild the method saved in ``path`` on ``backbone`` for ``task`` and restore its state.

    The saved model fingerprint must match ``backbone``'s (:class:`ModelMismatchError` names both).
    Returns the method (an ``nn.Module`` on the backbone's device); its ``inference_prompt()`` is
    what goes before the text (``[length, dim]``, a prefix, or None for full tuning).
    """
    from ..config import TrainConfig
    from ..training import method_config_from

    meta = read_saved_metadata(path)
    fp, trained_for = meta.get("model_fingerprint"), meta.get("model_id", "an unknown model")
    if fp is not None and fp != backbone.fingerprint:
        raise ModelMismatchError(
            f"{path} was trained for model {trained_for!r} (embedding fingerprint {fp}) but is being used with "
            f"{backbone.model_id!r} (fingerprint {backbone.fingerprint}); use --model {trained_for!r}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {k: v for k, v in (meta.get("training") or {}).items() if k in known}
    options.update(method=meta.get("method", "prompt-tuning"), init="random-uniform")  # the state replaces the init
    config, cls = method_config_from(TrainConfig(**options))
    method = cls.empty(config, backbone, task)
    method.load_state(path)
    return method.to(backbone.device)
