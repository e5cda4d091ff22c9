"""Every command's options are one dataclass of softprompt.config, and one mechanism
(softprompt.arguments) makes every command's CLI from it: nothing is written by hand beside it."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import softprompt
from cli_help import option_flags, usage
from softprompt import config
from softprompt.arguments import config_from_args
from softprompt.cli import COMMANDS, build_parser, main
from softprompt.config import (COMMAND_CONFIGS, DataConfig, ExperimentConfig, ExportPeftConfig, ImportPeftConfig,
                               InspectConfig, ModelOptions, RunOptions, ScoringOptions, TaskFormat)
from softprompt.errors import ConfigError


@pytest.mark.parametrize("command", sorted(COMMAND_CONFIGS))
def test_every_option_of_every_command_is_a_field_of_its_config(command):
    cls = COMMAND_CONFIGS[command]
    flags = {f for f in option_flags(command) if not f.startswith("--no-")} - {"-h", "--config"}
    fields = dataclasses.fields(cls)
    assert flags == {"--" + f.name.replace("_", "-") for f in fields if not f.metadata["positional"]}
    for f in fields:
        if f.metadata["positional"]:
            assert re.search(rf"[\s\[]{f.name}(\s|$)", usage(command)), f.name  # an argument without a flag
    assert ("--config" in option_flags(command)) == COMMANDS[command].yaml


def test_the_commands_and_their_configs_are_one_table():
    assert set(COMMANDS) == set(COMMAND_CONFIGS)
    assert {name for name in COMMAND_CONFIGS} == {"train", "eval", "predict", "inspect", "serve", "pretrain-prompt",
                                                  "experiment", "export-peft", "import-peft", "tasks"}


def _parse(argv):
    args = build_parser().parse_args(argv)
    return config_from_args(COMMAND_CONFIGS[argv[0]], args, yaml=COMMANDS[argv[0]].yaml)


def test_the_formerly_hand_written_commands_parse_into_their_configs():
    assert _parse(["inspect", "runs/rt/best", "--k", "3", "--json"]) == InspectConfig(prompt="runs/rt/best", k=3, json=True)
    assert _parse(["experiment", "experiments/quick.yaml", "--only", "a", "b", "--tasks", "sst2", "--dry-run",
                   "--no-progress"]) == ExperimentConfig(config="experiments/quick.yaml", only=["a", "b"], tasks=["sst2"],
                                                         dry_run=True, progress=False)
    assert _parse(["experiment", "e.yaml", "--report-only", "--out", "r"]) == ExperimentConfig(config="e.yaml", out="r",
                                                                                               report_only=True)
    assert _parse(["export-peft", "runs/rt/best", "--out", "adapter", "--fold-bos"]) == ExportPeftConfig(
        prompt="runs/rt/best", out="adapter", fold_bos=True)
    assert _parse(["import-peft", "adapter", "--out", "back", "--task", "sst2", "--allow-bos-mismatch"]) == ImportPeftConfig(
        adapter="adapter", out="back", task="sst2", allow_bos_mismatch=True)


@pytest.mark.parametrize("argv, missing", [
    (["export-peft", "dir"], "--out"), (["import-peft", "dir"], "--out"), (["export-peft", "--out", "o"], "prompt"),
    (["inspect"], "prompt"), (["experiment"], "config"),
])
def test_a_missing_argument_is_a_usage_error(argv, missing, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"the following arguments are required: {missing}" in capsys.readouterr().err


def test_a_bad_value_on_a_formerly_hand_written_command_is_exit_2_naming_the_option(capsys):
    assert main(["inspect", "nosuch", "--k", "0"]) == 2
    assert "--k must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", "nosuch", "--k", "many"])
    assert "argument --k: invalid int value: 'many'" in capsys.readouterr().err


def test_shared_options_are_written_once():
    """A shared field is one dataclass field, inherited: same default, same help, on every command."""
    def same(group, *commands, but=()):
        for f in dataclasses.fields(group):
            if f.name not in but:
                assert all(COMMAND_CONFIGS[c].__dataclass_fields__[f.name] is f for c in commands), (group, f.name)

    same(TaskFormat, "train", "eval", "predict")
    same(DataConfig, "train")
    same(ScoringOptions, "eval", "predict")
    same(ModelOptions, "eval", "predict", "inspect")
    same(RunOptions, "train", "pretrain-prompt", but={"init", "patience", "length_normalize", "seed", "out"})
    assert config.TrainConfig.__dataclass_fields__["init"].default == "class-labels"
    assert config.PretrainConfig.__dataclass_fields__["init"].default == "vocab"  # PPT's own default, redeclared


def test_serve_and_pretrain_configs_live_in_config_and_old_imports_still_work():
    from softprompt.ppt import PretrainConfig as from_ppt
    from softprompt.ppt.config import PretrainConfig as from_ppt_config
    from softprompt.serving.app import ServeConfig as from_app

    assert from_app is config.ServeConfig and from_ppt is from_ppt_config is config.PretrainConfig


def test_a_library_user_gets_the_same_checks_as_the_command_line():
    with pytest.raises(ConfigError, match="--max-steps must be at least 1, got 0"):
        config.PretrainConfig(corpus="c.txt", max_steps=0)
    with pytest.raises(ConfigError, match="--limit must be at least 1, got 0"):
        config.EvalConfig(limit=0)
    with pytest.raises(ConfigError, match="--shots must be at least 1, got 0"):
        config.TrainConfig(shots=0)


def test_ppt_option_bounds_match_the_formats():
    from softprompt.ppt.formats import FORMATS, LETTERS, PPT_FORMATS

    assert set(PPT_FORMATS) == set(FORMATS) == set(config.PRETRAIN_FORMATS) and config.MAX_OPTIONS == len(LETTERS)


# --------------------------------------------------------------------------- import cycles
def _imports(root: Path) -> dict[str, set[str]]:
    """For each module of the package, the package's modules it imports anywhere (function bodies
    included), with the packages whose ``__init__`` such an import runs."""
    graph = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        package = name if is_pkg else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = ".".join(p for p in (base if node.level else "", node.module or "") if p)
                found |= {mod} | {f"{mod}.{a.name}" for a in node.names}
        graph[name] = found
    modules = set(graph)
    for name, found in graph.items():
        targets = set()
        for mod in found & modules:
            parts = mod.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}  # each package on the way runs
        graph[name] = {t for t in targets & modules if not name.startswith(t + ".") and t != name}
    return graph


def _reaches(graph, start, goal) -> bool:
    seen, todo = set(), list(graph[start])
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


@pytest.mark.parametrize("module", ["softprompt.cli", "softprompt.serving.app", "softprompt.config",
                                    "softprompt.arguments", "softprompt.modeling"])
def test_the_command_modules_are_in_no_import_cycle(module):
    graph = _imports(Path(softprompt.__file__).parent)
    assert not _reaches(graph, module, module)
    assert "softprompt.cli" not in graph["softprompt.serving.app"]


def test_no_module_of_the_package_is_in_an_import_cycle():
    graph = _imports(Path(softprompt.__file__).parent)
    assert [m for m in sorted(graph) if _reaches(graph, m, m)] == []
