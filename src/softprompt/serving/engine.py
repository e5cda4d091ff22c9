"""One frozen backbone, many named prompts: :class:`MultiPromptModel`.

A *task* here is what a request names: either one saved output (its directory name) or an
*ensemble* of them whose majority vote is the answer. A saved output is anything
:func:`~softprompt.methods.loading.restore` restores (a prompt, a prefix, in-context
demonstrations, and later methods' outputs) except one that changes the shared model's own
weights (full tuning). Rows of different tasks share forward passes: every row carries its
method's conditioning (a :class:`~softprompt.conditioning.PerRow`, see
:meth:`softprompt.backbones.base.Backbone.word_scores`; a decoder-only backbone mixes prompts and
prefixes in one batch), and rows whose verbalizers give the same candidate words go through one
``word_scores`` call, so a fixed single-token verbalizer keeps the backbone's fast path. An
output's conditioning is one object for its whole life in the registry, so a decoder-only
backbone computes its keys/values once and reuses them.

Names match ``[A-Za-z0-9_.-]+``; a prompt given by path must resolve (symlinks included) inside
the prompts directory, and so must every file in it that is read. A prompt trained for another
model, a damaged file, metadata of the wrong shape or a tensor with NaN/Inf is refused with the
reason logged; the reason kept in :attr:`MultiPromptModel.refused` names files relative to the
prompts directory, never by their absolute path.

Inputs are typed strictly: a text, or an object whose template fields are texts (and whose
choices field, for a multiple-choice task, is a list of texts); nothing is converted or guessed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..api import PromptedModel
from ..artifacts import SAVED_OUTPUT_FILES, check_tensors, load_artifact
from ..conditioning import Conditioning, PerRow
from ..encoding import EncodedBatch, encode
from ..errors import ConfigError, DataError, PromptFileError, SoftPromptError
from ..methods.loading import method_class, restore_artifact, saved_task
from ..prompt import SoftPrompt
from ..scoring import first_tokens, match_generation
from ..tasks.data import apply_field_map
from ..tasks.task import Task

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
ENSEMBLE_FILES = ("ensembles.json", "ensembles.yaml", "ensembles.yml")


class UnknownTaskError(SoftPromptError, KeyError):
    """A request names a task (prompt or ensemble) that is not loaded."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TaskConflictError(SoftPromptError, ValueError):
    """A name is already taken, or a prompt cannot go because an ensemble uses it."""


@dataclass
class Classification:
    """One input's answer: ``label``, per-label probabilities, and for an ensemble each member's vote."""

    task: str
    label: str | None
    scores: dict[str, float]
    truncated: bool = False
    votes: dict[str, str] | None = None


@dataclass
class Generation:
    """One input's greedy continuation; ``label`` is the label it maps to (None if none).

    For an ensemble, ``text`` is the most common member output and ``votes`` each member's label."""

    task: str
    text: str
    label: str | None
    truncated: bool = False
    votes: dict[str, str | None] | None = None
    texts: dict[str, str] | None = None


@dataclass
class _Entry:
    name: str
    model: PromptedModel
    conditioning: Conditioning  # what the method adds to the model; one object for the KV cache
    length: int  # the positions it takes before the text
    path: str | None = None
    run: str | None = None  # a task of a multi-task run: the name the run was added under
    mixes: str | None = None  # a multi-task run's entry (its name's or a task's): the run's name


@dataclass
class _Unit:
    """One (input, prompt) pair to score: an ensemble input has one unit per member."""

    index: int
    entry: _Entry
    example: dict[str, Any]
    batch: EncodedBatch | None = None
    result: Any = None


@dataclass
class _Snapshot:
    prompts: dict[str, _Entry] = field(default_factory=dict)
    ensembles: dict[str, list[str]] = field(default_factory=dict)


def check_name(name: str) -> str:
    """``name`` if it is a valid prompt or ensemble name, else :class:`ConfigError`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"invalid name {name!r}: use letters, digits, '_', '.' and '-' only (not '.' or '..')")
    return name


class MultiPromptModel:
    """A frozen backbone serving many named prompts and ensembles of them.

    >>> mpm = MultiPromptModel.from_dir(load_model(), "prompts/")
    >>> mpm.classify(["a witty film", "is the sky blue?"], ["sentiment", "boolq"])[0].label
    """

    def __init__(self, backbone, prompts_dir: str | Path | None = None):
        self.backbone = backbone
        self.prompts_dir = Path(prompts_dir).resolve() if prompts_dir is not None else None
        self.refused: dict[str, str] = {}
        self._state = _Snapshot()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- registry
    @classmethod
    def from_dir(cls, backbone, prompts_dir: str | Path) -> "MultiPromptModel":
        """Load every subdirectory of ``prompts_dir`` holding a saved output (``softprompt.json``,
        ``prompt.safetensors``, ...: any method's), then the ensembles of ``ensembles.json`` (or
        ``.yaml``): ``{"name": ["member", ...]}``.

        An output that cannot be served (another model, a damaged file, no task, a fully tuned
        model) is logged with the reason, kept in :attr:`refused`, and the others still load.
        """
        root = Path(prompts_dir)
        if not root.is_dir():
            raise ConfigError(f"prompts directory {root} does not exist; create it and put saved prompts in it")
        mpm = cls(backbone, root)
        if (root / "results.json").is_file() or (root / "checkpoint").is_dir():
            log.warning("%s is one training run's folder: its best/ and last/ are served as two tasks named 'best' "
                        "and 'last'. To serve runs by name, give a folder holding each run's best/ as NAME/ "
                        "(a copy or a link)", root)
        for sub in sorted(root.iterdir()):
            if not _holds_output(sub):
                continue
            try:
                mpm.add(sub.name, sub.name)
            except SoftPromptError as exc:
                mpm.refused[sub.name] = mpm.public(str(exc))
                log.warning("prompt %s refused: %s", sub.name, exc)
        for fname in ENSEMBLE_FILES:
            if (root / fname).is_file():
                mpm._load_ensembles(root / fname)
                break
        return mpm

    def _load_ensembles(self, file: Path) -> None:
        text = file.read_text(encoding="utf-8")
        try:
            if file.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except ValueError as exc:  # JSONDecodeError and yaml's errors are ValueErrors or YAMLError
            raise ConfigError(f"{file} is not valid: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file} must map an ensemble name to a list of prompt names")
        for name, members in data.items():
            try:
                self.add_ensemble(str(name), members)
            except SoftPromptError as exc:
                self.refused[str(name)] = self.public(str(exc))
                log.warning("ensemble %s refused: %s", name, exc)

    def public(self, message: str) -> str:
        """``message`` with file paths shown as names: relative to the prompts directory, or the
        last component of any other absolute path (for anonymous clients)."""
        if self.prompts_dir is not None:
            message = message.replace(str(self.prompts_dir) + os.sep, "")
        return _ABSOLUTE_PATH.sub(lambda m: m.group(1), message)

    def _resolve(self, path: str | Path) -> Path:
        """``path`` as a directory inside :attr:`prompts_dir` (relative paths only, no escape);
        every file of it that loading reads must resolve inside :attr:`prompts_dir` too."""
        if isinstance(path, str) and "\x00" in path:
            raise ConfigError(f"prompt path {path!r} holds a NUL byte; give a directory name inside the prompts directory")
        p = Path(path)
        if self.prompts_dir is None:
            return p
        if p.is_absolute() or ".." in p.parts:
            raise ConfigError(f"prompt path {str(path)!r} must be relative to the prompts directory, without '..'")
        try:
            resolved = (self.prompts_dir / p).resolve()
            if not resolved.is_relative_to(self.prompts_dir):
                raise ConfigError(f"prompt path {str(path)!r} resolves outside the prompts directory")
            for fname in SAVED_OUTPUT_FILES:
                file = resolved / fname
                if (file.exists() or file.is_symlink()) and not file.resolve().is_relative_to(self.prompts_dir):
                    raise ConfigError(f"{p / fname} is a link to a file outside the prompts directory; copy the file in instead")
            found = any((resolved / fname).is_file() for fname in SAVED_OUTPUT_FILES)
        except OSError as exc:  # a name too long, a loop of links, no permission
            raise ConfigError(f"prompt path {str(path)[:200]!r} cannot be read ({exc.strerror or exc})") from None
        if not found:
            raise PromptFileError(f"no saved prompt at {path!r} in the prompts directory (expected one of "
                                  f"{', '.join(SAVED_OUTPUT_FILES)})")
        return resolved

    def add(self, name: str, prompt: str | Path | SoftPrompt, replace: bool = False) -> None:
        """Load (or take) a saved output under ``name``. ``prompt`` is a saved output's directory
        (any method's: :func:`~softprompt.methods.loading.restore`), relative to the prompts
        directory, or a :class:`SoftPrompt` whose metadata holds its task."""
        check_name(name)
        path = None
        if not isinstance(prompt, SoftPrompt):
            path = self._resolve(prompt)
        try:
            models = self._restored(name, path) if path is not None else {name: self._prompted(name, prompt)}
        except SoftPromptError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged file is refused, never a crash
            raise PromptFileError(f"prompt {name!r} is damaged or malformed ({type(exc).__name__}: {exc}); "
                                  f"re-save it with softprompt train") from exc
        where = None if path is None else str(path)
        # each task's conditioning computed here, once (a Hyperformer's adapters, a HyperPrompt's prefix)
        entries = {n: _Entry(n, m, m.conditioning, m.prompt_length, where, None if n == name else name,
                             name if len(models) > 1 else None) for n, m in models.items()}
        with self._lock:
            state = self._state
            for n in entries:
                mine = n in state.prompts and (n == name or state.prompts[n].run == name)
                if n in state.ensembles or (n in state.prompts and not (replace and mine)):
                    raise TaskConflictError(f"the name {n!r} is taken; remove it first or pick another")
            kept = {k: v for k, v in state.prompts.items() if not (replace and v.run == name)}
            self._state = _Snapshot({**kept, **entries}, state.ensembles)
            self.refused.pop(name, None)
        cache = getattr(self.backbone, "kv_cache_size", None)
        if cache is not None and cache < len(self._state.prompts) + 1:
            self.backbone.kv_cache_size = len(self._state.prompts) + 1  # every prompt's keys/values stay cached

    def _restored(self, name: str, path: Path) -> dict[str, PromptedModel]:
        """The saved output in ``path`` restored on the shared backbone, checked for serving:
        ``{name: model}``, and for a run of several tasks (metadata ``tasks``) also
        ``{name.task: model}`` for each of its tasks, with that task's template and verbalizer,
        all sharing the one restored method (:func:`run_task_names`)."""
        artifact = load_artifact(path, root=self.prompts_dir)  # the model check is restore_artifact's
        _check_task(name, artifact.metadata)
        cls = method_class(artifact)
        if cls.restoring_changes_backbone(artifact.metadata):  # it would change the weights every other output is served with
            raise PromptFileError(f"prompt {name!r} is a {artifact.kind} output, which changes the model's own "
                                  "weights: it cannot share a server with other outputs; evaluate it with "
                                  f"`softprompt eval --prompt DIR` or `softprompt predict --prompt DIR`")
        task = saved_task(artifact)
        method = restore_artifact(artifact, self.backbone, task)
        models = {name: self._checked(name, PromptedModel(self.backbone, None, task, method=method))}
        for full, one in run_task_names(name, artifact.metadata).items():
            models[full] = self._checked(full, PromptedModel(self.backbone, None, one, method=method))
        return models

    def _prompted(self, name: str, prompt: SoftPrompt) -> PromptedModel:
        """``prompt`` checked for serving (a task, finite float values, this model) and wrapped."""
        _check_task(name, prompt.metadata)
        check_tensors({"prompt": prompt.weight}, f"prompt {name!r}")  # as a loaded file is: floating point, finite
        task = Task.from_dict(prompt.metadata["task"])
        return self._checked(name, PromptedModel(self.backbone, prompt, task))  # refuses another model

    def _checked(self, name: str, model: PromptedModel) -> PromptedModel:
        """``model``, refused (:class:`PromptFileError`) if a one-word input cannot be encoded beside
        what it puts before the text, within its saved max length."""
        task = model.task
        placeholder = task.placeholder()
        try:  # at load, not per request: a context too short for the prompt, label words the model cannot tell apart
            encode(self.backbone, task, [placeholder], prompt_length=model.prompt_length, with_labels=False,
                   max_length=model.settings.max_length)
        except ConfigError as exc:
            raise PromptFileError(f"prompt {name!r} cannot be served with its saved max length "
                                  f"({model.settings.max_length} tokens): {exc}") from None
        return model

    def add_ensemble(self, name: str, members: Sequence[str]) -> None:
        """Answer task ``name`` by the majority vote of ``members`` (prompt names, same labels)."""
        check_name(name)
        if isinstance(members, str) or not isinstance(members, Sequence) or len(members) < 2:
            raise ConfigError(f"ensemble {name!r} needs a list of at least two prompt names, got {members!r}")
        members = list(members)
        with self._lock:
            state = self._state
            missing = [m for m in members if m not in state.prompts]
            if missing:
                raise ConfigError(f"ensemble {name!r}: no prompt named {missing}; loaded: {sorted(state.prompts)}")
            if len(set(members)) != len(members):
                raise ConfigError(f"ensemble {name!r} lists a member twice: {members}")
            labels = {tuple(state.prompts[m].model.task.verbalizer.label_names()) for m in members}
            if len(labels) != 1 or not all(state.prompts[m].model.task.verbalizer.is_fixed for m in members):
                raise ConfigError(f"ensemble {name!r}: members must have fixed verbalizers with the same labels, got {labels}")
            if name in state.prompts or name in state.ensembles:
                raise TaskConflictError(f"the name {name!r} is taken; remove it first or pick another")
            self._state = _Snapshot(state.prompts, {**state.ensembles, name: members})

    def remove(self, name: str) -> None:
        """Forget prompt or ensemble ``name``; a prompt an ensemble still uses is refused."""
        with self._lock:
            state = self._state
            if name in state.ensembles:
                self._state = _Snapshot(state.prompts, {k: v for k, v in state.ensembles.items() if k != name})
                return
            if name not in state.prompts:
                raise UnknownTaskError(f"no prompt or ensemble named {name!r}")
            gone = {k for k, v in state.prompts.items() if k == name or v.run == name}  # a run goes with its tasks
            users = [e for e, ms in state.ensembles.items() if gone.intersection(ms)]
            if users:
                raise TaskConflictError(f"prompt {name!r} is a member of ensemble(s) {users}; remove those first")
            self._state = _Snapshot({k: v for k, v in state.prompts.items() if k not in gone}, state.ensembles)

    def tasks(self) -> list[dict[str, Any]]:
        """What each servable task is: name, kind (the registered name of the method that saved a
        served output, e.g. ``knowprompt``, or ``ensemble``; ``method`` says the same of an output),
        labels, input fields (and the saved field map that renames an input's keys to them),
        members / prompt length."""
        state = self._state
        out = []
        for name, e in sorted(state.prompts.items()):
            t = e.model.task
            method = _method_name(e.model)
            out.append({"name": name, "kind": method, "task": t.name, "labels": t.verbalizer.label_names()
                        if t.verbalizer.is_fixed else None, "fields": list(t.template.fields),
                        **({"field_map": dict(t.field_map)} if t.field_map else {}),
                        "prompt_length": e.length, "method": method,
                        "description": t.description, **({"run": e.run} if e.run else {})})
        for name, members in sorted(state.ensembles.items()):
            t = state.prompts[members[0]].model.task
            out.append({"name": name, "kind": "ensemble", "task": t.name, "labels": t.verbalizer.label_names(),
                        "fields": list(t.template.fields), "members": list(members), "description": t.description})
        return out

    def model(self, name: str) -> PromptedModel:
        """The :class:`~softprompt.api.PromptedModel` served as task ``name`` (a prompt, not an
        ensemble): scoring one input with it alone gives what the server gives
        (:class:`UnknownTaskError` if none is loaded under that name)."""
        state = self._state
        if name not in state.prompts:
            raise UnknownTaskError(f"no prompt named {name[:100]!r}; loaded: {sorted(state.prompts)}")
        return state.prompts[name].model

    def __contains__(self, name: str) -> bool:
        state = self._state
        return name in state.prompts or name in state.ensembles

    # ------------------------------------------------------------------ inputs
    def _members(self, state: _Snapshot, task: str) -> list[_Entry]:
        if task in state.prompts:
            return [state.prompts[task]]
        if task in state.ensembles:
            return [state.prompts[m] for m in state.ensembles[task]]
        reason = self.refused.get(task)
        if reason is not None:  # loaded from the prompts directory but refused: say so, and why
            raise UnknownTaskError(f"task {task!r} is not served: it was refused when the server loaded it ({reason}); "
                                   f"loaded: {sorted(state.prompts) + sorted(state.ensembles)}")
        raise UnknownTaskError(f"no task named {task[:100]!r}; loaded: {sorted(state.prompts) + sorted(state.ensembles)}")

    def check(self, inputs: Sequence[str | Mapping[str, Any]], task: str) -> int:
        """Raise now what :meth:`classify` would raise for these inputs of one task (unknown task,
        missing field, empty text, a field that is not a text), so a server can refuse a request
        before batching it. Returns the tokens the request will run: every input's context after
        truncation, once per ensemble member."""
        tokens = 0
        for entry in self._members(self._state, task):
            task_ = entry.model.task
            for example in examples(task_, list(inputs)):
                batch = encode(self.backbone, task_, [example], prompt_length=entry.length, with_labels=False,
                               max_length=entry.model.settings.max_length)
                tokens += len(batch.context[0])
        return tokens

    def _units(self, inputs, tasks) -> tuple[_Snapshot, list[_Unit]]:
        if isinstance(inputs, (str, Mapping)):
            raise DataError("inputs must be a list (one entry per input), not a single text")
        if len(inputs) != len(tasks):
            raise ConfigError(f"{len(inputs)} inputs but {len(tasks)} tasks: give one task per input")
        state = self._state
        units = []
        for i, (item, task) in enumerate(zip(inputs, tasks)):
            for entry in self._members(state, task):
                units.append(_Unit(i, entry, examples(entry.model.task, [item], first=i)[0]))
        for u in units:  # one row each, so truncation is known per input
            u.batch = encode(self.backbone, u.entry.model.task, [u.example], prompt_length=u.entry.length,
                             with_labels=False, max_length=u.entry.model.settings.max_length)  # as predict: the prompt's own
        return state, units

    # ----------------------------------------------------------------- answers
    @torch.no_grad()
    def classify(self, inputs: Sequence[str | Mapping[str, Any]], tasks: Sequence[str],
                 batch_size: int = 64) -> list[Classification]:
        """Label each input with its task (``tasks[i]`` for ``inputs[i]``), all tasks batched together.

        Rows whose candidate words are the same go through one ``word_scores`` call with a
        per-row prompt list, at most ``batch_size`` rows at a time.
        """
        state, units = self._units(inputs, tasks)
        groups: dict[Any, list[_Unit]] = {}
        for u in units:
            rules = u.entry.model.task.verbalizer
            if rules.scores_slots:  # PTR's rules score several answer slots themselves (one row each)
                scores = rules.label_scores_of(self.backbone, u.batch, u.entry.conditioning,
                                               u.entry.model.settings.length_normalize)
                probs = torch.softmax(scores[0].float(), -1).cpu()
                u.result = {n: float(p) for n, p in zip(u.batch.label_names[0], probs)}
                continue
            words = _word_key(u.batch, u.entry.mixes)
            how = u.entry.model.settings
            key = (words, how.length_normalize, how.word_scoring, _slots(u.batch))  # as trained, same answer slots
            groups.setdefault(key, []).append(u)
        for (words, length_normalize, word_scoring, _), group in groups.items():
            for chunk in length_chunks(group, batch_size):
                batch = concat([u.batch for u in chunk], shared_words=words is not None)
                batch = first_tokens(batch) if word_scoring == "first-token" else batch
                scores = self.backbone.word_scores(PerRow(tuple(u.entry.conditioning for u in chunk)), batch, length_normalize)
                for j, u in enumerate(chunk):
                    u.result = self._label_probs(u, scores[j: j + 1])
        per_input = _by_input(units, len(inputs))
        return [self._answer(tasks[i], per_input[i], state) for i in range(len(inputs))]

    @staticmethod
    def _label_probs(unit: _Unit, word_scores: torch.Tensor) -> dict[str, float]:
        """Per-label probabilities of one row from its word scores ``[1, max_words]``."""
        b = unit.batch
        n_words = len(b.words[0])
        names = b.label_names[0]
        if b.shared_words:
            word_label = torch.tensor(b.word_label[0], device=word_scores.device)
            scores = unit.entry.model.task.verbalizer.aggregate(word_scores[:, :n_words], word_label, len(names))
        else:
            scores = word_scores[:, :n_words]
        probs = torch.softmax(scores[0, : len(names)].float(), -1).cpu()
        return {n: float(p) for n, p in zip(names, probs)}

    @staticmethod
    def _answer(task: str, units: list[_Unit], state: _Snapshot) -> Classification:
        truncated = any(u.batch.truncated for u in units)
        if task not in state.ensembles:
            probs = units[0].result
            return Classification(task, max(probs, key=probs.get), probs, truncated)
        votes = {u.entry.name: max(u.result, key=u.result.get) for u in units}
        mean = {n: sum(u.result[n] for u in units) / len(units) for n in units[0].result}
        count = Counter(votes.values())
        label = max(count, key=lambda n: (count[n], mean[n]))  # majority; ties go to the higher mean
        return Classification(task, label, mean, truncated, votes)

    @torch.no_grad()
    def generate(self, inputs: Sequence[str | Mapping[str, Any]], tasks: Sequence[str], max_new_tokens: int = 16,
                 batch_size: int = 64) -> list[Generation]:
        """Greedy continuation of each input under its task's prompt, all tasks batched together."""
        state, units = self._units(inputs, tasks)
        by_slots: dict[Any, list[_Unit]] = {}
        for u in units:
            by_slots.setdefault(_slots(u.batch), []).append(u)
        for chunk in (c for group in by_slots.values() for c in length_chunks(group, batch_size)):
            texts = self.backbone.generate(PerRow(tuple(u.entry.conditioning for u in chunk)), concat([u.batch for u in chunk], False),
                                           max_new_tokens)
            for u, text in zip(chunk, texts):
                verbalizer = u.entry.model.task.verbalizer
                u.result = (text, match_generation(text, verbalizer.label_names(u.example), verbalizer.candidates(u.example)))
        out = []
        for task, mine in zip(tasks, _by_input(units, len(inputs))):
            truncated = any(u.batch.truncated for u in mine)
            if task not in state.ensembles:
                text, label = mine[0].result
                out.append(Generation(task, text, label, truncated))
                continue
            texts = {u.entry.name: u.result[0] for u in mine}
            votes = {u.entry.name: u.result[1] for u in mine}
            text = Counter(texts.values()).most_common(1)[0][0]
            valid = Counter(v for v in votes.values() if v is not None)
            label = valid.most_common(1)[0][0] if valid else None
            out.append(Generation(task, text, label, truncated, votes, texts))
        return out


def _method_name(model: PromptedModel) -> str:
    """The registered name of the method whose output ``model`` serves: the restored method's
    (``knowprompt``, ``hyperformer``, ...), or, for a :class:`SoftPrompt` added in code, the method
    its metadata names (a bare prompt is prompt tuning's output)."""
    if model.method is not None:
        return model.method.name
    return str(model.soft_prompt.metadata.get("method") or "prompt-tuning")


def _holds_output(folder: Path) -> bool:
    """Whether ``folder`` holds a saved output's file (or a link in its place, refused when loaded)."""
    return any((folder / f).exists() or (folder / f).is_symlink() for f in SAVED_OUTPUT_FILES)


def _check_task(name: str, metadata: Any) -> None:
    """Refuse (:class:`PromptFileError`) an output whose metadata holds no task object to answer."""
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("task"), Mapping):
        raise PromptFileError(f"prompt {name!r} has no task object in its metadata (e.g. a PEFT adapter imported "
                              f"without --task): re-import it with `softprompt import-peft ADAPTER --out DIR --task NAME`")


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/(?:[^\s'\"/]+/)*([^\s'\"/]*)")


def examples(task: Task, inputs: Sequence[Any], first: int = 0) -> list[dict[str, Any]]:
    """Request inputs as example rows of ``task``, typed strictly (:class:`DataError` otherwise).

    A text fills the template's one field (a task of several fields needs an object; a text that
    looks like JSON is still a text). An object's keys are the template's fields, or the columns
    the task's saved field map (:attr:`Task.field_map`, the run's ``--field-map``) renames to them.
    Its values are texts, and a multiple-choice task's choices field is a list of texts; numbers,
    booleans and nested objects are refused, not converted. ``first`` numbers the inputs in messages.
    """
    fields = task.template.fields
    choices = getattr(task.verbalizer, "choices_field", None)
    needed = list(fields) + ([choices] if choices and choices not in fields else [])
    example = json.dumps({f: [] if f == choices else "..." for f in needed})
    columns = {ours: theirs for ours, theirs in task.field_map.items() if ours in needed}
    also = "" if not columns else " (or the columns the saved field map renames to them: " + ", ".join(
        f"{theirs!r} for {ours!r}" for ours, theirs in columns.items()) + ")"
    rows = []
    for i, item in enumerate(inputs, first):
        if isinstance(item, str):
            _check_text(item, f"input {i}")
            if len(needed) != 1:
                raise DataError(f"input {i}: task {task.name!r} reads fields {needed}; send an object with them, "
                                f"e.g. {example}")
            if not item.strip():
                raise DataError(f"input {i}: empty text; send a text with some words in it")
            rows.append({fields[0]: item})
            continue
        if not isinstance(item, Mapping):
            raise DataError(f"input {i}: expected a text or an object, got {type(item).__name__}")
        item = apply_field_map(dict(item), task.field_map, f"input {i}", optional=task.field_map)
        for key, value in item.items():
            if key == choices:
                if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                    raise DataError(f"input {i}: field {key!r} must be a list of texts, got {type(value).__name__}")
                for c in value:
                    _check_text(c, f"input {i}: field {key!r}")
            elif not isinstance(value, str):
                raise DataError(f"input {i}: field {key!r} must be a text, got {type(value).__name__}")
            else:
                _check_text(value, f"input {i}: field {key!r}")
        missing = [f for f in needed if f not in item]
        if missing:  # the server's own advice: what to send (the CLI's --template/--field-map do not exist here)
            raise DataError(f"input {i}: task {task.name!r} reads fields {needed}{also}, and the object lacks "
                            f"{', '.join(map(repr, missing))}; send an object with them, e.g. {example}")
        empty = [f for f in fields if not item[f].strip()]
        if empty:
            raise DataError(f"input {i}: empty text in field {empty[0]!r}; send a text with some words in it")
        rows.append(dict(item))
    task.validate(rows, labelled=False, names=[f"input {i}" for i in range(first, first + len(rows))])
    return rows


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"{where} is not valid Unicode text ({exc.reason} at character {exc.start}); "
                        f"send UTF-8 text") from None


def length_chunks(units: list[_Unit], batch_size: int, max_padding: float = 1.25, min_rows: int = 8) -> list[list[_Unit]]:
    """``units`` sorted by context length and cut into forward passes of at most ``batch_size``.

    A chunk is also cut (once it has ``min_rows``) before padding would make it more than
    ``max_padding`` times its real tokens: every padded position costs a full pass through the
    model, and request texts vary in length (a batch of 32 Rotten Tomatoes snippets padded to its
    longest is more than half padding).
    """
    chunks: list[list[_Unit]] = []
    chunk: list[_Unit] = []
    real = 0
    for u in sorted(units, key=lambda u: len(u.batch.context[0])):
        n = len(u.batch.context[0])
        if chunk and (len(chunk) >= batch_size or
                      (len(chunk) >= min_rows and (len(chunk) + 1) * n > max_padding * (real + n))):
            chunks.append(chunk)
            chunk, real = [], 0
        chunk.append(u)
        real += n
    if chunk:
        chunks.append(chunk)
    return chunks


def _by_input(units: list[_Unit], n: int) -> list[list[_Unit]]:
    out: list[list[_Unit]] = [[] for _ in range(n)]
    for u in units:
        out[u.index].append(u)
    return out


def _word_key(batch: EncodedBatch, run: str | None) -> tuple | None:
    """What rows must share to be scored in one ``word_scores`` call as rows of shared words:
    their candidates' token ids; for the tasks of one multi-task run (``run``, its name) whose
    candidates are each one token, only that (the backbones' one-position path reads each row's
    own ids, padding a row of fewer labels), so the run's tasks share a pass though their label
    words differ, in number too (CB's three beside RTE's two). None for rows scored with words
    of their own."""
    if not batch.shared_words:
        return None
    words = batch.words[0]
    if run is not None and all(len(w) == 1 for w in words):
        return ("one-token", run)
    return tuple(map(tuple, words))


def run_task_names(name: str, metadata: Mapping[str, Any]) -> dict[str, Task]:
    """The tasks of a saved multi-task run served as ``name``: ``{"name.task": Task}`` for each
    task of its metadata's ``tasks`` (each with its own template and verbalizer), empty for an
    output of one task. :class:`PromptFileError` for a ``tasks`` entry that is not a task object."""
    saved = metadata.get("tasks") or []
    if len(saved) < 2:
        return {}
    out = {}
    for d in saved:
        if not isinstance(d, Mapping) or not isinstance(d.get("name"), str):
            raise PromptFileError(f"prompt {name!r}: its metadata's tasks hold {type(d).__name__}, not task objects; "
                                  "re-save it with softprompt train")
        out[check_name(f"{name}.{d['name']}")] = Task.from_dict(d)
    return out


def _slots(batch: EncodedBatch) -> tuple:
    """What rows must share to be scored in one batch besides their words: the answer slots of
    their template and the one the words fill."""
    return batch.slot_names, batch.word_slot


def concat(batches: Sequence[EncodedBatch], shared_words: bool) -> EncodedBatch:
    """Rows of several encoded batches (of any tasks) as one batch, in order.

    ``shared_words=True`` is only right when every row has the same candidate words. Raises
    ``ValueError`` for batches whose templates have other answer slots (group them first).
    """
    if len({_slots(b) for b in batches}) > 1:
        raise ValueError(f"batches with different answer slots {sorted({_slots(b) for b in batches})} cannot be one batch")
    def rows(attr):
        return [x for b in batches for x in getattr(b, attr)]

    golds = [b.gold for b in batches]
    return EncodedBatch(
        context=rows("context"), words=rows("words"), word_label=rows("word_label"), word_weight=rows("word_weight"),
        label_names=rows("label_names"), gold=None if any(g is None for g in golds) else rows("gold"),
        shared_words=shared_words, mask_pos=rows("mask_pos"), truncated=sum(b.truncated for b in batches),
        slot_names=batches[0].slot_names, word_slot=batches[0].word_slot, answer_pos=rows("answer_pos"), virtual=rows("virtual"),
    )
