"""Loading what any method saved (``best/``, ``last/``): the method rebuilt and restored.

A prompt-tuning output is a :class:`~softprompt.prompt.SoftPrompt` and loads as one. Other methods
(prefix tuning, in-context demonstrations, full model tuning) save ``softprompt.json`` with their
name and training options beside their own files; :func:`load_saved_method` rebuilds the method
from those options on a backbone and restores it with :meth:`Method.load_state`, so
``softprompt eval``/``predict`` and :class:`~softprompt.api.PromptedModel` can use any of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..artifacts import META_FILE, check_fingerprint, check_prompt_length, read_metadata_file
from ..errors import ArtifactError, PromptFileError


def read_saved_metadata(path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """The validated ``softprompt.json`` of a saved output directory (a JSON object whose fields
    have their types, see :func:`~softprompt.artifacts.validate_metadata`); every file opened
    must lie inside ``root`` when given. Raises :class:`~softprompt.errors.ArtifactError`."""
    file = Path(path) / META_FILE
    if not file.exists() and not file.is_symlink():
        raise PromptFileError(f"nothing saved by softprompt at {path}: expected {META_FILE} there "
                              "(pass a run's best/ or last/ folder, e.g. runs/rt/best)")
    return read_metadata_file(file, root)


def load_saved_method(path: str | Path, backbone, task):
    """Rebuild the method saved in ``path`` on ``backbone`` for ``task`` and restore its state.

    The saved model fingerprint must match ``backbone``'s (:class:`~softprompt.errors.ModelMismatchError` names both).
    Returns the method (an ``nn.Module`` on the backbone's device); its ``inference_conditioning()`` is
    what it adds to the model (input vectors, a prefix, or nothing for full tuning). A prompt
    that leaves the text too little of the model's context is refused (:class:`ArtifactError`).
    """
    from ..config import TrainConfig
    from ..training import method_config_from

    meta = read_saved_metadata(path)
    check_fingerprint(meta, backbone.model_id, backbone.fingerprint, str(path))
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {k: v for k, v in (meta.get("training") or {}).items() if k in known}
    options.update(method=meta.get("method", "prompt-tuning"), init="random-uniform")  # the state replaces the init
    try:
        config, cls = method_config_from(TrainConfig(**options))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{Path(path) / META_FILE}: metadata field 'training' holds options that do not "
                            f"build a run ({exc}); re-save it or train again") from exc
    method = cls.empty(config, backbone, task)
    method.load_state(path)
    check_prompt_length(method.prompt_length, backbone.max_length - backbone.n_special, path)
    return method.to(backbone.device)
