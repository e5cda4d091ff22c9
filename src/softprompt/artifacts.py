"""Every method's saved output, written by :func:`save_artifact` and read, validated before
anything uses it, by :func:`load_artifact`.

A saved output (a prompt, a prefix, in-context demonstrations, a fully tuned model, and any later
method's) is a directory holding ``softprompt.json`` (the metadata: the method's name, its
options, the task, and the model check: the model's id, family and embedding fingerprint) and,
when the method has tensors, one safetensors file whose header carries the same metadata
(:data:`KIND_FILES` names it per method; nothing is pickled). Whoever reads one (``eval``,
``predict``, the server, ``--resume``, ``--init file:``) goes through this module, so a file that
is valid JSON but not an object, a field of the wrong type, a tensor holding NaN, integers or the
wrong shape, or a file that is a link leading outside a trusted folder, is refused with
:class:`~softprompt.errors.ArtifactError` naming the file and the problem, before use; the model
check is :func:`check_model`.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from .encoding import MIN_TEXT_TOKENS  # what encode needs beside the prompt
from .errors import ArtifactError, ModelMismatchError
from .outdir import LOCK_FILE
from .value_types import describe, fits

PROMPT_FILE = "prompt.safetensors"
PREFIX_FILE = "prefix.safetensors"
MODEL_FILE = "model.safetensors"
TENSOR_FILE = "tensors.safetensors"
META_FILE = "softprompt.json"
FORMAT_VERSION = 1

FIELD_TYPES: dict[str, Any] = {
    "task": dict, "model_id": str, "model_fingerprint": str | None, "model_family": str, "init": str,
    "model_weights": str,
    "method": str, "format_version": int, "length": int, "dim": int, "training": dict, "step": int,
    "metrics": dict, "task_name": str, "processes": int, "versions": dict, "ppt": dict,
    # prefix tuning
    "layers": int, "layer_shapes": list, "reparameterize": bool, "hidden": int,
    # in-context demonstrations
    "shots": int, "balanced": bool, "separator": str, "demonstrations": list, "text": str, "token_ids": list,
    # adapters, Hyperformer; a multi-task run's tasks
    "adapter": dict, "hyperformer": dict, "hyperprompt": dict, "tasks": list, "task_prompts": dict,
    # what `softprompt inspect` calls a saved tensor, and each of its rows
    "tensor_titles": dict, "row_names": dict,
}
"""The type each metadata field must have when present (checked by :func:`~softprompt.value_types.fits`)."""

ARTIFACT_FILES = (META_FILE, PROMPT_FILE, PREFIX_FILE, MODEL_FILE, TENSOR_FILE, LOCK_FILE)
"""What any method's save writes: a save replaces these (a rerun with another method included)
and refuses to delete anything else (:func:`~softprompt.atomic.atomic_dir`). The lock file is
there when a command holds the folder while saving into it (``import-peft``,
:func:`~softprompt.outdir.out_lock`); the save's swap ends that hold."""

SAVED_OUTPUT_FILES = ARTIFACT_FILES[:-1]
"""The files that show a folder holds a saved output (what ``--overwrite`` is needed to replace)."""

KIND_FILES = {"prompt-tuning": PROMPT_FILE, "prefix-tuning": PREFIX_FILE, "full-tuning": MODEL_FILE}
"""The tensor file of the methods whose file name predates :data:`TENSOR_FILE` (any other method's
tensors go to :data:`TENSOR_FILE`; a method without tensors saves ``softprompt.json`` alone)."""


def tensor_file_name(method: str) -> str:
    """The name of ``method``'s safetensors file in its saved directory."""
    return KIND_FILES.get(method, TENSOR_FILE)


@dataclass
class Artifact:
    """A validated saved output: its ``kind`` (the method), directory, metadata and tensors.

    ``tensors`` holds the prompt's or prefix's tensors (each floating point and finite); for a
    fully tuned model it is empty and ``tensor_file`` is the checked ``model.safetensors``.
    """

    kind: str
    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    tensor_file: Path | None = None

    @property
    def length(self) -> int | None:
        """Positions the output puts before the text, as its metadata records (a prompt's rows if not)."""
        prompt = self.tensors.get("prompt")
        return self.metadata.get("length", None if prompt is None else prompt.shape[0])

    @property
    def dim(self) -> int | None:
        """Width of the output's vectors, as its metadata records (a prompt's columns if not); None if it has none."""
        prompt = self.tensors.get("prompt")
        return self.metadata.get("dim", None if prompt is None or prompt.dim() != 2 else prompt.shape[1])


def safe_file(file: str | Path, root: str | Path | None = None) -> Path:
    """``file`` resolved (links followed), refused unless it is a regular file inside ``root``.

    With ``root`` None there is no containment, but the file must still be a regular file (not a
    device or a FIFO, which would be read forever). Raises :class:`ArtifactError`.
    """
    file = Path(file)
    try:
        real = file.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # missing, a dangling link, a link loop
        raise ArtifactError(f"{file} cannot be opened ({exc}); re-save it or pass another path") from exc
    if root is not None:
        base = Path(root).resolve()
        if not real.is_relative_to(base):
            raise ArtifactError(f"{file} resolves to {real}, outside {base}: links leading out of that folder are "
                                "refused; copy the file into it instead of linking")
    if not stat.S_ISREG(real.stat().st_mode):
        raise ArtifactError(f"{file} is not a regular file; put the saved file itself there")
    return real


def _read_bytes(real: Path, shown: Path) -> bytes:
    """The bytes of ``real`` (already resolved), opened without following a link swapped in since."""
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ArtifactError(f"{shown} cannot be read ({exc}); re-save it or train again") from exc


def read_metadata_file(file: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """The validated JSON object in ``file`` (a ``softprompt.json``); :class:`ArtifactError` if not."""
    file = Path(file)
    real = safe_file(file, root)
    try:
        meta = json.loads(_read_bytes(real, file).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{file} is not valid JSON ({exc}); re-save it or train again") from exc
    return validate_metadata(meta, file)


def read_safetensors(file: str | Path, root: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a small safetensors file whose header carries softprompt's metadata.

    The metadata is validated (:func:`validate_metadata`); the tensors are checked by the caller
    (:func:`check_tensors`). Raises :class:`ArtifactError` for a truncated or corrupt file.
    """
    file = Path(file)
    real = safe_file(file, root)
    data = _read_bytes(real, file)
    try:
        tensors = load_safetensors_bytes(data)
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8: 8 + n].decode("utf-8")).get("__metadata__") or {}
        text = header.get("softprompt", "{}")
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise ArtifactError(f"{file} is truncated or corrupt ({exc}); re-save it or train again") from exc
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{file} has unreadable metadata ({exc}); re-save it") from exc
    return tensors, validate_metadata(meta, file)


def validate_metadata(meta: Any, where: str | Path) -> dict[str, Any]:
    """``meta`` if it is a JSON object whose known fields (:data:`FIELD_TYPES`) have their types.

    The task, when present, must rebuild (:meth:`~softprompt.tasks.task.Task.from_dict`); a
    ``format_version`` newer than this softprompt's is refused. Raises :class:`ArtifactError`.
    """
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where}: the metadata must be a JSON object, got {type(meta).__name__} "
                            f"{_short(meta)}; re-save it or train again")
    for name, tp in FIELD_TYPES.items():
        if name in meta and not fits(meta[name], tp):
            raise ArtifactError(f"{where}: metadata field {name!r} must be {describe(tp)}, got "
                                f"{type(meta[name]).__name__} {_short(meta[name])}; re-save it or train again")
    for name, least in (("length", 0), ("dim", 1)):  # 0 in-context demonstrations save length 0
        if name in meta and meta[name] < least:
            raise ArtifactError(f"{where}: metadata field {name!r} must be at least {least}, got {meta[name]}")
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ArtifactError(f"{where} is format version {meta['format_version']}, newer than this softprompt reads "
                            f"({FORMAT_VERSION}): upgrade softprompt")
    if "task" in meta:
        from .tasks.task import Task

        try:
            Task.from_dict(meta["task"])
        except Exception as exc:  # noqa: BLE001  any way a hand-edited task fails to rebuild
            raise ArtifactError(f"{where}: metadata field 'task' does not describe a task ({exc}); "
                                "re-save it or train again") from exc
    _check_demonstrations(meta, where)
    _check_scoring_settings(meta, where)
    return meta


def _scoring_checks() -> dict[str, tuple[Any, str]]:
    """``{field: (test, what it must be)}`` for each ``training`` field that
    :class:`~softprompt.api.ScoringSettings` reads from a saved output."""
    from .scoring import SCORINGS, WORD_SCORINGS

    return {
        "scoring": (lambda v: isinstance(v, str) and v in SCORINGS, f"one of {list(SCORINGS)}"),
        "length_normalize": (lambda v: isinstance(v, bool), "true or false"),
        "word_scoring": (lambda v: isinstance(v, str) and v in WORD_SCORINGS, f"one of {list(WORD_SCORINGS)}"),
        "max_length": (lambda v: fits(v, int) and v >= 1, "a whole number >= 1 (tokens)"),
    }


def _check_scoring_settings(meta: dict[str, Any], where) -> None:
    """The ``training`` settings a saved output is scored with by default (a missing or null one
    takes its default), each of the right type and range, else :class:`ArtifactError` naming it."""
    training = meta.get("training") or {}
    for name, (ok, want) in _scoring_checks().items():
        value = training.get(name)
        if value is not None and not ok(value):
            raise ArtifactError(f"{where}: metadata field 'training.{name}' must be {want}, got "
                                f"{type(value).__name__} {_short(value)}; correct it or delete it (its default "
                                "then applies), or train again")


def check_scoring_settings(training: Any, where: str | Path = "metadata") -> None:
    """Public form of the check on a ``training`` dict (see :func:`validate_metadata`); raises
    :class:`ArtifactError` naming the field."""
    if training is not None and not isinstance(training, dict):
        raise ArtifactError(f"{where}: metadata field 'training' must be a JSON object, got {_short(training)}")
    _check_scoring_settings({"training": training}, where)


def _check_demonstrations(meta: dict[str, Any], where) -> None:
    for i, d in enumerate(meta.get("demonstrations", [])):
        if not (isinstance(d, dict) and isinstance(d.get("row"), dict) and isinstance(d.get("text"), str)):
            raise ArtifactError(f"{where}: metadata field 'demonstrations' item {i} must be "
                                f'{{"row": {{...}}, "text": "..."}}, got {_short(d)}')
    if not all(fits(t, int) and t >= 0 for t in meta.get("token_ids", [])):
        raise ArtifactError(f"{where}: metadata field 'token_ids' must list whole numbers >= 0")


def check_tensors(tensors: dict[str, torch.Tensor], where: str | Path) -> None:
    """Every tensor floating point and finite, else :class:`ArtifactError` naming it."""
    for name, t in tensors.items():
        if not t.dtype.is_floating_point:
            raise ArtifactError(f"{where}: tensor {name!r} is {t.dtype}, not floating point; re-save it as float32")
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ArtifactError(f"{where}: tensor {name!r} holds {bad} NaN or infinite value(s); the training "
                                "diverged or the file is damaged: use another checkpoint (e.g. best/) or train again")


def check_prompt_tensor(weight: torch.Tensor, meta: dict[str, Any], where: str | Path) -> None:
    """A prompt ``[length, dim]``: 2-D, floating, finite, agreeing with its metadata (the model it
    is used with is :func:`check_model`'s business)."""
    check_tensors({"prompt": weight}, where)
    if weight.dim() != 2:
        raise ArtifactError(f"{where}: prompt has shape {tuple(weight.shape)}, expected 2-D [length, dim]")
    if weight.shape[0] < 1:
        raise ArtifactError(f"{where}: the prompt has no vectors (shape {tuple(weight.shape)}); a prompt needs at "
                            "least 1: use another saved prompt or train one (softprompt train --prompt-length N)")
    want = (meta.get("length"), meta.get("dim"))
    if None not in want and tuple(weight.shape) != tuple(want):
        raise ArtifactError(f"{where}: prompt has shape {tuple(weight.shape)} but its metadata says {tuple(want)}; "
                            "the file is damaged")


def check_fingerprint(meta: dict[str, Any], model_id: str, fingerprint: str, what: str) -> None:
    """Refuse a model whose embedding ``fingerprint`` differs from the one ``what`` (e.g. "this
    prompt", a saved folder) records in ``meta`` (:class:`ModelMismatchError`): under the model's
    own name the weights differ, else another model is being used (and ``--model`` names the right one)."""
    fp = meta.get("model_fingerprint")
    if fp is None or fp == fingerprint:
        return
    trained_for = meta.get("model_id", "an unknown model")
    if trained_for == model_id:
        raise ModelMismatchError(
            f"{what} was trained for model {trained_for!r} with other weights: the model loaded under that "
            f"name has embedding fingerprint {fingerprint}, the prompt's has {fp} (another checkpoint or a "
            f"fine-tuned copy under the same name); load the weights it was trained on, or train a prompt on these"
        )
    raise ModelMismatchError(
        f"{what} was trained for model {trained_for!r} (embedding fingerprint {fp}) but is being used "
        f"with {model_id!r} (fingerprint {fingerprint}); use --model {trained_for!r} or train a prompt for {model_id!r}"
    )


def check_prompt_length(length: int, room: int, where: str | Path) -> None:
    """Refuse a prompt of ``length`` vectors that leaves under :data:`MIN_TEXT_TOKENS` of ``room``
    (the model's context less its special tokens) for the text."""
    if length > room - MIN_TEXT_TOKENS:
        raise ArtifactError(f"{where}: the prompt has {length} vectors but the model's context holds {room} "
                            f"(after special tokens), leaving under {MIN_TEXT_TOKENS} for text; use a model with a "
                            "longer context (or a larger --max-length) or a shorter prompt")


def save_artifact(path: str | Path, method: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any],
                  *, backbone=None) -> dict[str, Any]:
    """Write a method's output to directory ``path``, atomically (the one writer of saved outputs).

    ``tensors``: name -> tensor, written as they are (dtype kept; callers cast) to the method's
    safetensors file (:func:`tensor_file_name`), whose header carries the metadata too; none: no
    tensor file. A name that is an alias of another (a tied weight: the same memory, shape and
    strides) is written once; a tensor overlapping another's memory otherwise is copied.
    ``metadata``: JSON-serialisable fields; ``method`` and ``format_version`` are set here, and
    with ``backbone`` the model check (``model_id``, ``model_fingerprint``, ``model_family``).
    The directory is swapped in whole (:func:`~softprompt.atomic.atomic_dir`): a reader sees the
    old output or the new one. Returns the metadata written. Raises
    :class:`~softprompt.errors.ConfigError` if ``path`` holds files a save would delete.
    """
    from .atomic import atomic_dir

    meta = {**metadata, "method": method, "format_version": FORMAT_VERSION}
    if backbone is not None:
        meta.update(model_id=backbone.model_id, model_fingerprint=backbone.fingerprint, model_family=backbone.family)
    text = json.dumps(meta, indent=2, default=str)
    out = _without_aliases({name: t.detach() for name, t in tensors.items()})
    with atomic_dir(Path(path), owned=ARTIFACT_FILES) as tmp:
        (tmp / META_FILE).write_text(text + "\n", encoding="utf-8")
        if out:
            save_file(out, str(tmp / tensor_file_name(method)), metadata={"softprompt": text})
    return meta


def _without_aliases(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` on the CPU and contiguous, each memory written once: an exact alias of an
    earlier name (a tied weight) is dropped, a partial overlap copied (safetensors refuses both)."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in tensors.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and key in seen:
            continue
        cpu = t.contiguous().cpu()
        ptr = cpu.untyped_storage().data_ptr()
        if cpu.numel() and ptr in storages:
            cpu = cpu.clone()
        storages.add(cpu.untyped_storage().data_ptr())
        seen[key] = name
        out[name] = cpu
    return out


def check_model(meta: Mapping[str, Any], model_id: str, fingerprint: str, model_dim: int | None = None,
                room: int | None = None, *, length: int | None = None, dim: int | None = None,
                what: str = "this prompt") -> None:
    """The model check of a saved output, before it is used on a model (the one check, for every method).

    ``meta``: the output's metadata (its ``model_fingerprint`` and ``model_id``); ``length``: the
    positions it puts before the text (refused when it leaves under :data:`MIN_TEXT_TOKENS` of
    ``room``, the model's context less its special tokens: :class:`ArtifactError`); ``dim``: the
    width of its vectors, when it has some (refused unless the model's ``model_dim``:
    :class:`ModelMismatchError`). Then the embedding fingerprint (:func:`check_fingerprint`).
    """
    if room is not None and length is not None:
        check_prompt_length(length, room, f"{what} (trained for {meta.get('model_id', 'unknown')!r})")
    trained_for = meta.get("model_id", "an unknown model")
    if dim is not None and model_dim is not None and dim != model_dim:
        raise ModelMismatchError(
            f"{what} has dimension {dim} (trained for model {trained_for!r}) but the model's embeddings have "
            f"{model_dim}: pass --model {trained_for!r} (the model it was trained for) or train a prompt for {model_id!r}"
        )
    check_fingerprint(meta, model_id, fingerprint, what)


def load_artifact(path: str | Path, *, root: str | Path | None = None, backbone=None) -> Artifact:
    """Read and validate what softprompt saved at ``path`` (a directory, or a prompt's file).

    ``root``: every file opened must resolve inside it (links out are refused). ``backbone``: the
    model it will be used with, when known: the output must pass :func:`check_model` (its
    fingerprint, a prompt's embedding size, and :data:`MIN_TEXT_TOKENS` of the context left for text). The kind comes from
    the files there: ``prompt.safetensors`` (prompt tuning, metadata in its header, tensor
    ``prompt: [length, dim]``; prompts saved before :func:`save_artifact` existed are the same
    format), ``prefix.safetensors`` (prefix tuning), else ``softprompt.json`` names the method,
    whose tensors, if any, are in ``model.safetensors`` (full tuning: checked, left on disk as
    :attr:`Artifact.tensor_file`) or :data:`TENSOR_FILE` (read into :attr:`Artifact.tensors`). Raises :class:`ArtifactError` (a :class:`PromptFileError`) or
    :class:`ModelMismatchError`.
    """
    art = _load_artifact(Path(path), root)
    if backbone is not None:
        check_model(art.metadata, backbone.model_id, backbone.fingerprint, backbone.dim,
                    backbone.max_length - backbone.n_special, length=art.length, dim=art.dim, what=str(path))
    return art


def _load_artifact(path: Path, root) -> Artifact:
    if root is not None:
        safe_dir(path, root)
    if not path.exists() and not path.is_symlink():
        raise ArtifactError(f"{path} does not exist: pass a run's best/ or last/ folder (e.g. runs/rt/best) or a "
                            f"saved {PROMPT_FILE}")
    if not path.is_dir():
        if path.name == PREFIX_FILE:
            return _load_prefix(path.parent, path, root)
        return _load_prompt(path.parent, path, root)
    if (path / PROMPT_FILE).exists() or (path / PROMPT_FILE).is_symlink():
        return _load_prompt(path, path / PROMPT_FILE, root)
    if (path / PREFIX_FILE).exists() or (path / PREFIX_FILE).is_symlink():
        return _load_prefix(path, path / PREFIX_FILE, root)
    if not (path / META_FILE).exists() and not (path / META_FILE).is_symlink():
        raise ArtifactError(f"nothing saved by softprompt at {path}: expected {PROMPT_FILE} or {META_FILE} there "
                            "(pass a run's best/ or last/ folder, e.g. runs/rt/best)")
    meta = read_metadata_file(path / META_FILE, root)
    kind = meta.get("method", "prompt-tuning")
    if kind in ("prompt-tuning", "prefix-tuning"):
        raise ArtifactError(f"{path}: its metadata names method {kind!r} but {KIND_FILES[kind]} is missing; "
                            "the save was cut: use another checkpoint or train again")
    art = Artifact(kind, path, meta)
    if kind == "full-tuning":
        art.tensor_file = safe_file(path / MODEL_FILE, root)
        _check_large_file(art.tensor_file, path / MODEL_FILE)
    elif (path / TENSOR_FILE).exists() or (path / TENSOR_FILE).is_symlink():  # another method's tensors
        art.tensors, _ = read_safetensors(path / TENSOR_FILE, root)
        check_tensors(art.tensors, path / TENSOR_FILE)
    if kind == "in-context" and "demonstrations" not in meta:
        raise ArtifactError(f"{path / META_FILE} holds no in-context demonstrations; re-save it")
    return art


def safe_dir(path: str | Path, root: str | Path) -> Path:
    """``path`` resolved, refused (:class:`ArtifactError`) unless inside ``root``."""
    real, base = Path(path).resolve(), Path(root).resolve()
    if not real.is_relative_to(base):
        raise ArtifactError(f"{path} resolves to {real}, outside {base}; put the saved prompt inside that folder")
    return real


def _load_prompt(folder: Path, file: Path, root) -> Artifact:
    if not file.exists() and not file.is_symlink():
        raise ArtifactError(f"no saved prompt at {folder}: expected {PROMPT_FILE} there (train one with "
                            "`softprompt train --out DIR`, then pass DIR/best)")
    tensors, meta = read_safetensors(file, root)
    if "prompt" not in tensors:
        raise ArtifactError(f"{file} holds no tensor named 'prompt' (found {sorted(tensors)}); is it a softprompt file?")
    check_prompt_tensor(tensors["prompt"], meta, file)
    return Artifact("prompt-tuning", folder, meta, tensors)


def _load_prefix(folder: Path, file: Path, root) -> Artifact:
    if not file.exists() and not file.is_symlink():
        raise ArtifactError(f"no saved prefix at {folder}: expected {PREFIX_FILE} there (train one with "
                            "`softprompt train --method prefix-tuning --out DIR`, then pass DIR/best)")
    tensors, meta = read_safetensors(file, root)
    check_tensors(tensors, file)
    # key.N / value.N are [kv_heads, length, head_dim]; in-context demonstrations alone may be empty
    empty = [n for n, t in sorted(tensors.items()) if n.startswith(("key.", "value.")) and t.dim() == 3 and t.shape[1] < 1]
    if meta.get("length", 1) < 1 or empty:
        raise ArtifactError(f"{file}: the prefix has no positions (length {meta.get('length')}"
                            f"{', ' + empty[0] + ' of shape ' + str(tuple(tensors[empty[0]].shape)) if empty else ''}); "
                            "a prefix needs at least 1: use another saved prefix or train one "
                            "(softprompt train --method prefix-tuning --prompt-length N)")
    return Artifact("prefix-tuning", folder, meta, tensors)


def _check_large_file(real: Path, shown: Path) -> None:
    """Each floating-point tensor of a model's safetensors file finite, read one at a time (integer
    buffers are the model's business: :meth:`FullTuning.load_state` compares dtypes)."""
    from safetensors import safe_open

    try:
        with safe_open(str(real), framework="pt") as fh:
            for name in fh.keys():
                t = fh.get_tensor(name)
                if t.dtype.is_floating_point:
                    check_tensors({name: t}, shown)
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{shown} is truncated or corrupt ({exc}); re-save it or train again") from exc


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
