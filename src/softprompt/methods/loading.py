"""Restoring what any method saved (``best/``, ``last/``): :func:`restore`, the one restore path.

``softprompt eval`` and ``predict`` (through :class:`~softprompt.api.PromptedModel`), the
experiment runner and the server all restore a saved output here, whatever the method: the
output is read and validated once (:func:`~softprompt.artifacts.load_artifact`), checked against
the model once (:func:`~softprompt.artifacts.check_model`), the method named in its metadata is
rebuilt from the options it records (:func:`~softprompt.methods.configs.method_config`) without
training rows (:meth:`Method.empty`), and its state restored (:meth:`Method.restore_from`). A
saved prompt (prompt tuning, older files too) restores as a
:class:`~softprompt.methods.prompt_tuning.PromptTuning`; a later method restores here without a
line changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import META_FILE, Artifact, check_model, load_artifact, read_metadata_file
from ..errors import ArtifactError, ConfigError, DataError, PromptFileError
from .base import Method, PerTaskMethod, get_method, task_names
from .configs import method_config


def read_saved_metadata(path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """The validated ``softprompt.json`` of a saved output directory (a JSON object whose fields
    have their types, see :func:`~softprompt.artifacts.validate_metadata`); every file opened
    must lie inside ``root`` when given. Raises :class:`~softprompt.errors.ArtifactError`."""
    file = Path(path) / META_FILE
    if not file.exists() and not file.is_symlink():
        raise PromptFileError(f"nothing saved by softprompt at {path}: expected {META_FILE} there "
                              "(pass a run's best/ or last/ folder, e.g. runs/rt/best)")
    return read_metadata_file(file, root)


def has_saved_task(artifact: Artifact) -> bool:
    """Whether ``artifact`` records its task (a PEFT adapter imported without ``--task`` does not)."""
    return isinstance(artifact.metadata.get("task"), dict)


def saved_task(artifact: Artifact):
    """The :class:`~softprompt.tasks.task.Task` saved with ``artifact`` (:class:`DataError` if none was)."""
    from ..tasks.task import Task

    if not has_saved_task(artifact):
        raise DataError(f"{artifact.path} has no task in its metadata (e.g. a PEFT adapter imported without "
                        f"--task): name it with --task NAME (or --template and --label-words), or re-import it with "
                        f"`softprompt import-peft ADAPTER --out {artifact.path} --task NAME --overwrite`")
    return Task.from_dict(artifact.metadata["task"])


def method_class(artifact: Artifact) -> type[Method]:
    """The registered method class that saved ``artifact`` (:class:`ArtifactError` for an unknown one)."""
    try:
        return get_method(artifact.kind)[1]
    except ConfigError as exc:
        raise ArtifactError(f"{artifact.path}: saved by method {artifact.kind!r}, which this softprompt does not "
                            f"have ({exc}); upgrade softprompt or train again") from None


def saved_config(artifact: Artifact):
    """The config of the method that saved ``artifact``: built from the ``training`` options its
    metadata records (:func:`~softprompt.methods.configs.method_config`), then what the method
    recorded of its own laid over it by the method itself (:meth:`Method.config_from_saved`: a
    prompt's ``length``, a prefix's ``hidden``, in-context ``shots``, ...). Raises
    :class:`~softprompt.errors.ConfigError` (or the config's own error) for options it refuses."""
    meta = artifact.metadata
    config, cls = method_config(artifact.kind, meta.get("training") or {})
    return cls.config_from_saved(config, meta)


def check_saved_task(artifact: Artifact, name: str) -> None:
    """Refuse, before any model is loaded, a task that the saved per-task method of ``artifact``
    (one run of several tasks, :class:`~softprompt.methods.base.PerTaskMethod`) was not trained
    for: :class:`ConfigError`, as restoring it would raise later. Other methods answer any task
    whose format fits."""
    cls = method_class(artifact)
    if issubclass(cls, PerTaskMethod):
        cls.check_task(task_names(saved_config(artifact).task) or (saved_task(artifact).name,), name)


def restore(path: str | Path, backbone, task=None, root: str | Path | None = None) -> Method:
    """The method saved in ``path`` (a directory, or a prompt's file) rebuilt on ``backbone`` and restored.

    ``task``: what the method answers (None: the task saved with it; :class:`DataError` if none
    was). ``root``: every file opened must resolve inside it. The saved model fingerprint must
    match ``backbone``'s and a prompt its embedding width (:class:`~softprompt.errors.ModelMismatchError`
    names both); what the method puts before the text must leave the text room in the model's
    context (:class:`ArtifactError`). Returns the method on the backbone's device, its
    ``metadata`` the saved metadata; what it adds to the model is its ``inference_conditioning()``.
    """
    return restore_artifact(load_artifact(path, root=root), backbone, task)


def restore_artifact(artifact: Artifact, backbone, task=None) -> Method:
    """:func:`restore` of an output already read by :func:`~softprompt.artifacts.load_artifact`
    (e.g. to see its metadata or method class first)."""
    meta = artifact.metadata
    task = saved_task(artifact) if task is None else task
    check_model(meta, backbone.model_id, backbone.fingerprint, backbone.dim, backbone.max_length - backbone.n_special,
                length=artifact.length, dim=artifact.dim, what=str(artifact.path))
    cls = method_class(artifact)
    try:
        config = saved_config(artifact)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{Path(artifact.path) / META_FILE}: metadata field 'training' holds options that do not "
                            f"build a {artifact.kind} method ({exc}); re-save it or train again") from exc
    try:
        method = cls.empty(config, backbone, task)
    except ConfigError:  # a model without a kind the method needs: the backbone's own message
        raise
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{Path(artifact.path) / META_FILE}: the saved options do not build a {artifact.kind} "
                            f"method ({type(exc).__name__}: {exc}); re-save it or train again") from exc
    method.restore_from(artifact)
    method.use_task(task.name)  # a multi-task run's method answers for the task asked for
    method.metadata = dict(meta)
    return method.to(backbone.device)
