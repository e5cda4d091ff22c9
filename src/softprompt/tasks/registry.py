"""Built-in tasks and where their examples come from.

:func:`load_split` looks for ``<task>/<split>.jsonl`` in this order:

1. the file ``Task.splits[split]``, when the task names one (custom data);
2. ``data_dir``, or the ``SOFTPROMPT_DATA_DIR`` environment variable;
3. the copy bundled inside the package (only a subset of ``rotten_tomatoes``);
4. the Hugging Face hub through ``datasets``, if it is installed and the task has a hub
   source (``HUB_SOURCES``);

and raises :class:`DataError` naming every place it looked when none has the split.
"""

from __future__ import annotations

import copy
import importlib
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from softprompt.errors import ConfigError, DataError, nearest
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import ChoiceVerbalizer, Verbalizer

DATA_DIR_ENV = "SOFTPROMPT_DATA_DIR"
SPLITS = ("train", "validation", "test")

_NLI3 = "{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:"
_NLI2 = "{premise}\nQuestion: {hypothesis} True or False?\nAnswer:"
_NLI3_WORDS = {"entailment": "True", "contradiction": "False", "neutral": "Neither"}
_NLI2_WORDS = {"entailment": "True", "not_entailment": "False"}


def _task(name: str, template: str, label_words: dict[str, str] | None, **kwargs: Any) -> Task:
    verbalizer = ChoiceVerbalizer() if label_words is None else Verbalizer(label_words)
    return Task(name=name, template=Template(template), verbalizer=verbalizer, **kwargs)


def _semeval_task() -> Task:
    """SemEval-2010 Task 8 with PTR's rules (tasks/rules.py, docs/relations.md): three answer slots."""
    from softprompt.tasks.rules import RuleVerbalizer

    return Task(
        name="semeval2010_task8", template=Template(SEMEVAL_TEMPLATE), verbalizer=RuleVerbalizer.from_spec("semeval"),
        metrics=("semeval_f1", "micro_f1_no_other", "accuracy"),
        description="SemEval-2010 Task 8: the relation between two marked nominals (9 relations x 2 directions + Other).",
    )


SEMEVAL_TEMPLATE = "{text} The {mask:head} {e1} {mask:link} the {mask:tail} {e2}."
"""PTR's template for SemEval: the head entity's type, the relation phrase, the tail entity's type."""

BUILTIN_TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        _task(
            "boolq", "{passage}\nQuestion: {question}?\nAnswer:", {"no": "no", "yes": "yes"},
            description="BoolQ: answer a yes/no question about a Wikipedia passage.",
        ),
        _task(
            "rotten_tomatoes", "Review: {text}\nSentiment:", {"negative": "negative", "positive": "positive"},
            description="Rotten Tomatoes: sentiment of a movie-review snippet.",
        ),
        _task(
            "trec", "Question: {text}\nAnswer type:",
            {
                "abbreviation": "abbreviation", "description": "description", "entity": "entity",
                "human": "person", "location": "place", "number": "number",
            },
            description="TREC: the coarse type of the answer a question asks for (6 classes).",
        ),
        _task(
            "presuppositions_as_nli", _NLI3, _NLI3_WORDS, metrics=("accuracy", "macro_f1"),
            description="BIG-bench presuppositions as NLI: 3-way entailment (CB-like).",
        ),
        _task(
            "epistemic_reasoning", _NLI2, _NLI2_WORDS,
            description="BIG-bench epistemic reasoning: 2-way entailment about beliefs (RTE-like).",
        ),
        _task(
            "cause_and_effect", "{choices}\n{question}\nAnswer:", None,
            description="BIG-bench cause and effect: pick the event that caused the other (2 choices).",
        ),
        _task(
            "winowhy",
            "{sentence}\nExplanation: {explanation}\nQuestion: Is the explanation correct?\nAnswer:",
            {"correct": "yes", "incorrect": "no"},
            description="BIG-bench WinoWhy: is the explanation of a Winograd-schema answer right?",
        ),
        _task(
            "rte", _NLI2, _NLI2_WORDS,
            description="RTE (SuperGLUE): 2-way textual entailment.",
        ),
        _task(
            "cb", _NLI3, _NLI3_WORDS, metrics=("accuracy", "macro_f1"),
            description="CommitmentBank (SuperGLUE): 3-way entailment of an embedded clause.",
        ),
        _task(
            "copa", "{premise} What was the {question}?\nAnswer:", None,
            description="COPA (SuperGLUE): pick the more plausible cause or effect (2 choices).",
        ),
        _task(
            "wic",
            "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: Is the word '{word}' used "
            "with the same meaning in both sentences?\nAnswer:",
            {"different": "no", "same": "yes"},
            description="WiC (SuperGLUE): does a word have the same sense in two sentences?",
        ),
        _task(
            "mrpc",
            "Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: Do both sentences mean the "
            "same thing?\nAnswer:",
            {"equivalent": "yes", "not_equivalent": "no"},
            metrics=("accuracy", "f1"), positive_label="equivalent",
            description="MRPC (GLUE): are two news sentences paraphrases?",
        ),
        _task(
            "qqp_sample",
            "Question 1: {question1}\nQuestion 2: {question2}\nQuestion: Do both questions mean the "
            "same thing?\nAnswer:",
            {"duplicate": "yes", "not_duplicate": "no"},
            metrics=("accuracy", "f1"), positive_label="duplicate",
            description="QQP sample (GLUE train): are two Quora questions duplicates?",
        ),
        _task(
            "ag_news", "Title: {title}\nDescription: {text}\nTopic:",
            # KPT's one-word-per-class baseline words (OpenPrompt's manual verbalizer for AG News)
            {"world": "politics", "sports": "sports", "business": "business", "sci/tech": "technology"},
            metrics=("accuracy", "macro_f1"),
            description="AG News: the topic of a news article (4 classes), KPT's benchmark.",
        ),
        _semeval_task(),
    ]
}

# Splits of the canonical copies (the project's shared data); other split names are refused.
_NO_TEST = ("boolq", "trec", "rte", "cb", "wic", "qqp_sample")  # test labels hidden or absent
BUILTIN_SPLITS: dict[str, tuple[str, ...]] = {
    name: SPLITS[:2] if name in _NO_TEST else SPLITS for name in BUILTIN_TASKS
}


@dataclass(frozen=True)
class HubSource:
    """Where a task lives on the Hugging Face hub and how its rows become ours.

    ``splits`` maps our split name to the hub's; ``label_names[i]`` is our label for the
    hub's integer label ``i`` (read from ``label_field``); ``renames`` maps a hub field to
    ours; ``convert`` (optional) rewrites a row after that (e.g. COPA's two choices).
    """

    path: str
    config: str | None
    label_names: tuple[str, ...]
    splits: dict[str, str] = field(default_factory=lambda: {s: s for s in ("train", "validation", "test")})
    label_field: str = "label"
    renames: dict[str, str] = field(default_factory=dict)
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _copa_row(row: dict[str, Any]) -> dict[str, Any]:
    row["label"] = row[row["label"]]  # "choice1" / "choice2" -> the text of that choice
    row["choices"] = [row.pop("choice1"), row.pop("choice2")]
    return row


_TRAIN_VAL = {"train": "train", "validation": "validation"}
HUB_SOURCES: dict[str, HubSource] = {
    "rotten_tomatoes": HubSource("cornell-movie-review-data/rotten_tomatoes", None, ("negative", "positive")),
    "boolq": HubSource("super_glue", "boolq", ("no", "yes"), splits=_TRAIN_VAL),
    "rte": HubSource("super_glue", "rte", ("entailment", "not_entailment"), splits=_TRAIN_VAL),
    "cb": HubSource("super_glue", "cb", ("entailment", "contradiction", "neutral"), splits=_TRAIN_VAL),
    "copa": HubSource("super_glue", "copa", ("choice1", "choice2"), splits=_TRAIN_VAL, convert=_copa_row),
    "wic": HubSource("super_glue", "wic", ("different", "same"), splits=_TRAIN_VAL),
    "mrpc": HubSource("nyu-mll/glue", "mrpc", ("not_equivalent", "equivalent"), splits=_TRAIN_VAL),
    "trec": HubSource(
        "CogComp/trec", None,
        ("abbreviation", "entity", "description", "human", "location", "number"),
        splits={"train": "train"}, label_field="coarse_label",
    ),
}


def list_tasks() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(BUILTIN_TASKS)


def get_task(name: str) -> Task:
    """A fresh copy of the built-in task ``name`` (``rotten-tomatoes`` also finds ``rotten_tomatoes``)."""
    key = _builtin_key(name)
    if key not in BUILTIN_TASKS:
        raise ConfigError(f"{unknown_task(name)}. For your own data, build a Task (template + verbalizer) with "
                          "splits pointing at your files")
    return copy.deepcopy(BUILTIN_TASKS[key])


def _builtin_key(name):
    """How a built-in task is looked up: ``Rotten-Tomatoes`` finds ``rotten_tomatoes``."""
    return name.strip().lower().replace("-", "_") if isinstance(name, str) else name


def is_builtin_task(name: str) -> bool:
    """Whether :func:`get_task` finds ``name``."""
    return _builtin_key(name) in BUILTIN_TASKS


def unknown_task(name: str) -> str:
    """What is wrong with a task name that is not built in, with the closest built-in name: the
    start of each caller's message, which adds the fix its own interface offers."""
    close = nearest(_builtin_key(name), BUILTIN_TASKS)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"unknown task {name!r}{hint}; built-in tasks: {', '.join(list_tasks())}"


def load_split(
    task: Task | str, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None,
    labelled: bool = True,
) -> list[dict[str, Any]]:
    """Read, check and return the examples of ``split`` (e.g. ``"validation"``) of ``task``
    (``labelled=False``: their labels are not checked, e.g. KPT's unlabelled support inputs)."""
    task = get_task(task) if isinstance(task, str) else task
    if split in task.splits:
        return task.read_file(task.splits[split], field_map={}, limit=limit, labelled=labelled)
    if task.splits:
        raise DataError(
            f"task {task.name!r} has no {split!r} split; its files are for: {', '.join(task.splits)}"
        )
    known = BUILTIN_SPLITS.get(task.name)
    if known is not None and split not in known:
        raise DataError(f"task {task.name!r} has no {split!r} split; available splits: {', '.join(known)}")

    looked: list[str] = []
    root = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if root is not None:
        folder = Path(root) / task.name
        path = folder / f"{split}.jsonl"
        if path.is_file():
            return task.read_file(path, field_map={}, limit=limit, labelled=labelled)
        if folder.is_dir():
            found = sorted(p.stem for p in folder.glob("*.jsonl"))
            raise DataError(
                f"{folder} has no {split}.jsonl; available splits there: {', '.join(found) or 'none'}"
            )
        source = "data_dir" if data_dir is not None else f"${DATA_DIR_ENV}"
        looked.append(f"{path} ({source})")
    else:
        looked.append(f"no data_dir given and ${DATA_DIR_ENV} is not set")

    bundled = _bundled_file(task.name, split)
    if bundled is not None:
        with importlib.resources.as_file(bundled) as path:
            return task.read_file(path, field_map={}, limit=limit, labelled=labelled, shown_as=f"bundled {task.name}/{split}.jsonl")
    looked.append(f"the package's bundled data (softprompt/data/{task.name}/{split}.jsonl)")

    hub = HUB_SOURCES.get(task.name)
    if hub is None:
        looked.append(f"the Hugging Face hub (no hub source known for {task.name!r})")
    elif split not in hub.splits:
        looked.append(f"the Hugging Face hub ({hub.path} has no {split!r} split with labels)")
    else:
        try:
            datasets = importlib.import_module("datasets")
        except ImportError:
            looked.append("the Hugging Face hub (the `datasets` package is not installed)")
        else:
            rows = _load_hub(datasets, task, hub, split, limit)
            return _checked(task, rows, f"hub {hub.path}/{hub.config or ''}:{hub.splits[split]}", labelled)
    raise DataError(
        f"no {split!r} data found for task {task.name!r}; looked at: " + "; ".join(looked)
        + f". Pass --data-dir DIR, the folder that holds {task.name}/{split}.jsonl (or set ${DATA_DIR_ENV})"
    )


def _bundled_file(name: str, split: str) -> Any:
    try:
        path = importlib.resources.files("softprompt.data") / name / f"{split}.jsonl"
    except ModuleNotFoundError:  # installed without its data
        return None
    return path if path.is_file() else None


def _checked(task: Task, rows: list[dict[str, Any]], where: str, labelled: bool = True) -> list[dict[str, Any]]:
    task.validate(rows, where=where, labelled=labelled)
    return rows


def _load_hub(datasets: Any, task: Task, hub: HubSource, split: str, limit: int | None) -> list[dict[str, Any]]:
    hub_split = hub.splits[split]
    try:
        dataset = datasets.load_dataset(hub.path, hub.config, split=hub_split)
        rows = []
        for i, raw in enumerate(dataset):
            if limit is not None and len(rows) >= limit:
                break
            rows.append(_hub_row(dict(raw), hub, i))
    except DataError:
        raise
    except Exception as err:  # network, missing dataset, changed schema: all mean "no data"
        raise DataError(
            f"no local copy of {task.name}/{split} was found and the Hugging Face hub could not "
            f"provide it ({hub.path} {hub.config or ''} split {hub_split!r}: "
            f"{type(err).__name__}: {err}); download the data and pass "
            f"--data-dir DIR, the folder that holds {task.name}/{split}.jsonl"
        ) from err
    return rows


def _hub_row(row: dict[str, Any], hub: HubSource, position: int) -> dict[str, Any]:
    value = row.pop(hub.label_field)
    if not isinstance(value, int) or not 0 <= value < len(hub.label_names):
        raise DataError(
            f"the hub copy ({hub.path} {hub.config or ''}) has no gold label for row {position} "
            f"(label {value!r}); its labels may be hidden for this split: use a local copy with --data-dir"
        )
    row["label"] = hub.label_names[value]
    for theirs, ours in hub.renames.items():
        row[ours] = row.pop(theirs)
    if hub.convert is not None:
        row = hub.convert(row)
    row.setdefault("idx", position)
    return row
