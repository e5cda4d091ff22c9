import json
import os
import sys
import types
from pathlib import Path

import pytest

from softprompt.errors import ConfigError, DataError, TemplateError, UnknownLabelError
from softprompt.tasks import BUILTIN_TASKS, ChoiceVerbalizer, Task, Template, Verbalizer
from softprompt.tasks.registry import get_task, list_tasks, load_split

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("SOFTPROMPT_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "manifest.json").is_file(),
    reason=f"shared data not found at {SHARED_DATA} (set SOFTPROMPT_SHARED_DATA to its folder)",
)
NAMES = [
    "boolq", "rotten_tomatoes", "trec", "presuppositions_as_nli", "epistemic_reasoning",
    "cause_and_effect", "winowhy", "rte", "cb", "copa", "wic", "mrpc", "qqp_sample", "ag_news", "semeval2010_task8",
]
# Shared data sets that are not built-in tasks yet, each with the issue that adds it.
NOT_YET_TASKS: dict[str, str] = {}  # semeval2010_task8 became built in (issue 17)


@pytest.fixture(autouse=True)
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv("SOFTPROMPT_DATA_DIR", raising=False)


def manifest():
    return json.loads((SHARED_DATA / "manifest.json").read_text(encoding="utf-8"))["tasks"]


def test_builtin_tasks_are_complete_and_well_formed():
    assert list_tasks() == sorted(NAMES)
    for name in NAMES:
        task = get_task(name)
        # SemEval is scored by its official score first (issue 17)
        assert task.name == name and task.primary_metric() == ("semeval_f1" if name == "semeval2010_task8" else "accuracy")
        assert not task.template.text.endswith((" ", "\n")) and task.verbalizer.prefix == " "
        assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    assert isinstance(get_task("copa").verbalizer, ChoiceVerbalizer)
    assert isinstance(get_task("cause_and_effect").verbalizer, ChoiceVerbalizer)
    assert get_task("mrpc").metrics == ("accuracy", "f1") and get_task("mrpc").positive_label == "equivalent"
    assert get_task("qqp_sample").positive_label == "duplicate"
    assert get_task("cb").metrics == ("accuracy", "macro_f1")
    assert get_task("presuppositions_as_nli").metrics == ("accuracy", "macro_f1")
    # domain transfer: the two paraphrase tasks answer with the same words
    mrpc, qqp = get_task("mrpc").verbalizer, get_task("qqp_sample").verbalizer
    assert dict(zip(mrpc.labels, mrpc.words))["equivalent"] == dict(zip(qqp.labels, qqp.words))["duplicate"] == ["yes"]
    assert sorted(w for ws in mrpc.words for w in ws) == sorted(w for ws in qqp.words for w in ws)
    cb = get_task("cb").verbalizer
    assert dict(zip(cb.labels, cb.words)) == {"entailment": ["True"], "contradiction": ["False"], "neutral": ["Neither"]}


def test_get_task_returns_a_copy_and_accepts_dashes():
    task = get_task("rotten-tomatoes")
    task.metrics = ("f1",)
    assert BUILTIN_TASKS["rotten_tomatoes"].metrics == ("accuracy",)


def test_unknown_task():
    with pytest.raises(ConfigError) as info:
        get_task("sst2")
    message = str(info.value)
    assert "'sst2'" in message and "rotten_tomatoes" in message and "Task" in message


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_every_builtin_loads_its_validation_split(name):
    rows = load_split(name, "validation", data_dir=SHARED_DATA, limit=20)
    assert 0 < len(rows) <= 20 and all("label" in row for row in rows)


@needs_shared
def test_every_row_of_every_split_fits_its_task():
    tasks = {k: v for k, v in manifest().items() if k not in NOT_YET_TASKS}
    assert sorted(tasks) == sorted(NAMES)
    for name, info in tasks.items():
        task = get_task(name)
        if "labels" in info:
            assert sorted(task.verbalizer.labels) == sorted(info["labels"]), name
        for split, entry in info["files"].items():
            rows = load_split(task, split, data_dir=SHARED_DATA)  # validates every row
            assert len(rows) == entry["lines"], (name, split)


def test_bundled_rotten_tomatoes_loads_without_data_dir():
    rows = load_split("rotten_tomatoes", "validation")
    assert len(rows) == 300 and {r["label"] for r in rows} == {"positive", "negative"}
    assert len(load_split("rotten_tomatoes", "train", limit=5)) == 5
    assert len(load_split("rotten_tomatoes", "test")) == 500
    if (SHARED_DATA / "rotten_tomatoes" / "validation.jsonl").is_file():
        full = load_split("rotten_tomatoes", "validation", data_dir=SHARED_DATA)
        assert rows == full[:300]


def test_data_dir_from_environment_wins_over_bundled(tmp_path, monkeypatch):
    folder = tmp_path / "rotten_tomatoes"
    folder.mkdir()
    (folder / "validation.jsonl").write_text('{"text": "Fine.", "label": "positive"}\n', encoding="utf-8")
    monkeypatch.setenv("SOFTPROMPT_DATA_DIR", str(tmp_path))
    assert load_split("rotten_tomatoes", "validation") == [{"text": "Fine.", "label": "positive", "idx": 0}]
    with pytest.raises(DataError, match="no test.jsonl; available splits there: validation"):
        load_split("rotten_tomatoes", "test")


def test_missing_split_names_available_ones():
    with pytest.raises(DataError, match="'boolq' has no 'test' split; available splits: train, validation"):
        load_split("boolq", "test")


def test_nothing_found_lists_places(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(DataError) as info:
        load_split("winowhy", "validation", data_dir=tmp_path)
    message = str(info.value)
    for part in [str(tmp_path / "winowhy" / "validation.jsonl"), "bundled", "no hub source", "--data-dir"]:
        assert part in message
    with pytest.raises(DataError, match="not installed"):
        load_split("rte", "validation", data_dir=tmp_path)


def test_rows_are_validated(tmp_path):
    folder = tmp_path / "rte"
    folder.mkdir()
    path = folder / "train.jsonl"
    path.write_text('{"premise": "p", "hypothesis": "h", "label": "maybe", "idx": 5}\n', encoding="utf-8")
    with pytest.raises(UnknownLabelError, match=r"train\.jsonl:1: task 'rte': unknown label 'maybe' \(example idx=5\)"):
        load_split("rte", "train", data_dir=tmp_path)
    path.write_text('{"premise": "p", "sentence2": "h", "label": "entailment", "idx": 9}\n', encoding="utf-8")
    with pytest.raises(TemplateError, match=r"example idx=9: template slot \{hypothesis\}"):
        load_split("rte", "train", data_dir=tmp_path)


def test_custom_task_files_take_precedence(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\nLoved it,1\nHated it,0\n", encoding="utf-8")
    task = Task("mine", Template("{text}\nGood?"), Verbalizer({"1": "yes", "0": "no"}), splits={"train": str(path)})
    rows = load_split(task, "train", data_dir=tmp_path)
    assert [r["label"] for r in rows] == ["1", "0"]
    with pytest.raises(DataError, match="no 'validation' split; its files are for: train"):
        load_split(task, "validation")


class FakeDatasets(types.ModuleType):
    def __init__(self, rows=None, error=None):
        super().__init__("datasets")
        self.rows, self.error, self.calls = rows, error, []

    def load_dataset(self, path, name=None, split=None):
        self.calls.append((path, name, split))
        if self.error:
            raise self.error
        return iter(self.rows)


def test_hub_rows_are_converted(tmp_path, monkeypatch):
    fake = FakeDatasets(rows=[
        {"premise": "A dog runs.", "hypothesis": "An animal moves.", "idx": 0, "label": 0},
        {"premise": "A dog runs.", "hypothesis": "A cat sleeps.", "idx": 1, "label": 1},
    ])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    rows = load_split("rte", "validation", data_dir=tmp_path)
    assert fake.calls == [("super_glue", "rte", "validation")]
    assert [r["label"] for r in rows] == ["entailment", "not_entailment"]

    fake.rows = [{"premise": "It rained.", "question": "effect", "choice1": "A", "choice2": "B", "idx": 4, "label": 1}]
    rows = load_split("copa", "train", data_dir=tmp_path)
    assert rows == [{"premise": "It rained.", "question": "effect", "idx": 4, "choices": ["A", "B"], "label": "B"}]

    fake.rows = [{"text": "Why?", "coarse_label": 1, "fine_label": 3}, {"text": "Who?", "coarse_label": 3, "fine_label": 9}]
    rows = load_split("trec", "train", data_dir=tmp_path, limit=1)
    assert rows == [{"text": "Why?", "fine_label": 3, "label": "entity", "idx": 0}]


def test_hub_failure_and_hidden_labels_are_data_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets(error=ConnectionError("offline")))
    with pytest.raises(DataError) as info:
        load_split("mrpc", "validation", data_dir=tmp_path)
    message = str(info.value)
    assert "no local copy" in message and "offline" in message and "--data-dir DIR, the folder that holds mrpc/validation.jsonl" in message
    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets(rows=[{"sentence1": "a", "sentence2": "b", "label": -1}]))
    with pytest.raises(DataError, match="no gold label"):
        load_split("mrpc", "validation", data_dir=tmp_path)


def test_task_checks_itself():
    with pytest.raises(ConfigError, match="positive_label"):
        Task("t", Template("{text}"), Verbalizer({"a": "x"}), metrics=("accuracy", "f1"))
    with pytest.raises(ConfigError, match="not one of the labels"):
        Task("t", Template("{text}"), Verbalizer({"a": "x"}), positive_label="b")
    with pytest.raises(ConfigError, match="unknown metric"):
        Task("t", Template("{text}"), Verbalizer({"a": "x"}), metrics=("acc",))
    with pytest.raises(TemplateError, match="gold answer"):
        Task("t", Template("{text} {label}"), Verbalizer({"a": "x"}))
    task = Task("t", Template("{text}"), Verbalizer({"a": "x"}))
    task.validate([{"text": "no label here"}], labelled=False)
    with pytest.raises(UnknownLabelError):
        task.validate([{"text": "no label here"}])
