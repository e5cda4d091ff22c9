"""The ``softprompt`` command. Every command's options are one dataclass of
:mod:`softprompt.config` (:data:`~softprompt.config.COMMAND_CONFIGS`), turned into options by
:mod:`softprompt.arguments`, the one mechanism (why not ``transformers.HfArgumentParser``: see
there); ``--config FILE.yaml`` loads the same options from YAML (command-line options win).
A command's handler takes its config and returns the exit status."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import traceback
from typing import Any, Callable, NamedTuple

from .arguments import add_options, config_from_args
from .config import (COMMAND_CONFIGS, COMMAND_HELP, KNOWLEDGEABLE, EvalConfig, ExperimentConfig, ExportPeftConfig, ImportPeftConfig,
                     InspectConfig, LabelWordsConfig, PredictConfig, PretrainConfig, ProgressOptions, ServeConfig, TasksConfig,
                     TrainConfig, field_default, options_in)
from .errors import SoftPromptError, nearest
from .interrupts import TrainingInterrupted
from .modeling import default_device, progress_bars

__all__ = ["COMMANDS", "VERBOSE", "Command", "build_parser", "config_from_args", "entry", "main"]


def cmd_train(cfg: TrainConfig) -> int:
    from .training import train

    result = train(cfg)
    dev = {k: round(v, 6) if isinstance(v, float) else v for k, v in result.dev.items()}  # 0.6 for 0.6000000000000001
    print(f"best {'prompt' if cfg.method == 'prompt-tuning' else 'state'}: {result.best_prompt}  (dev {json.dumps(dev)})")
    if result.test is not None:
        primary, split = next(iter(result.test)), result.test_split
        print(f"{split} {primary} with the learned prompt: {result.test[primary]:.4f}  ({json.dumps(result.test)})")
        if result.zero_shot_test is not None:
            print(f"{split} {primary} zero-shot (same template and verbalizer, no prompt): "
                  f"{result.zero_shot_test[primary]:.4f}  ({json.dumps(result.zero_shot_test)})")
    print(f"wall time: {result.seconds:.1f} s")
    return 0


def _reformats(cfg: EvalConfig | PredictConfig) -> bool:
    """Whether ``cfg`` lays another task's format, or your own, over a saved output's task."""
    return bool(cfg.task or cfg.template or cfg.label_words or cfg.label_words_file or cfg.field_map)


def _scored_task(cfg: EvalConfig | PredictConfig):
    """``(task, saved output)``: the task ``eval`` / ``predict`` scores with, built without a model
    (the saved output's, read from its files, or the zero-shot one, with ``cfg``'s format options
    laid over it), and the saved output read (an :class:`~softprompt.artifacts.Artifact`; None for
    zero-shot). The commands check their inputs against the task before any model work (a wrong
    field is refused in a second, not after the model loads and KPT's refinement)."""
    from .tasks.from_config import task_from_config

    if cfg.prompt:
        from .artifacts import load_artifact
        from .methods.loading import check_saved_task, has_saved_task, saved_task

        artifact = load_artifact(cfg.prompt)
        if not has_saved_task(artifact) and (cfg.task or (cfg.template and cfg.label_words)):
            return task_from_config(cfg), artifact  # saved without a task (a PEFT import): scored as told
        saved = saved_task(artifact)
        task = task_from_config(cfg, base=saved) if _reformats(cfg) else saved
        _log_field_map(cfg, saved, task)
        check_saved_task(artifact, task.name)  # one task of a multi-task run: refused before its rows are read
        return task, artifact
    if not (cfg.task or (cfg.template and cfg.label_words)):
        raise SoftPromptError("give --prompt DIR (a saved prompt, e.g. runs/rt/best), or for zero-shot scoring "
                              "--task NAME, or --template and --label-words (and --model)")
    return task_from_config(cfg), None


def _log_field_map(cfg: EvalConfig | PredictConfig, saved, task) -> None:
    """Say in ``-v`` logs which field map renames the columns of ``cfg``'s files and inputs: the
    saved run's (task ``saved``), or ``--field-map``, which replaces it."""
    def text(fm):
        return ",".join(f"{ours}={theirs}" for ours, theirs in fm.items())

    if cfg.field_map and saved.field_map and saved.field_map != task.field_map:
        logging.getLogger("softprompt").info("--field-map %s replaces the field map %s was trained with (%s)",
                                             text(task.field_map), cfg.prompt, text(saved.field_map))
    elif task.field_map and not cfg.field_map:
        logging.getLogger("softprompt").info("reading columns by the field map %s was trained with: %s "
                                             "(--field-map replaces it)", cfg.prompt, text(task.field_map))


def _prompted_model(cfg: EvalConfig | PredictConfig, task, artifact):
    """The saved output of ``cfg.prompt`` (``artifact``; its training settings as defaults; its task
    restored with it, then ``cfg``'s format options laid over it as :func:`_scored_task` did, or
    ``task`` where it saved none), or a zero-shot model scoring ``task`` (:func:`_scored_task`)."""
    from .api import PromptedModel, ScoringSettings
    from .modeling import DEFAULT_MODEL, load_model
    from .tasks.from_config import task_from_config

    given = {"scoring": cfg.scoring, "length_normalize": cfg.length_normalize, "max_length": cfg.max_length,
             "word_scoring": cfg.word_scoring}
    if cfg.prompt:
        from .methods.loading import has_saved_task

        # ``task`` is used only where the output saved none; a saved task is restored with it
        pm = PromptedModel.from_saved(cfg.prompt, model=cfg.model, device=default_device(cfg.device), task=task, **given)
        if has_saved_task(artifact) and _reformats(cfg):  # another task's format, or your own, over the restored task
            pm.task = task_from_config(cfg, base=pm.task)
            pm.method.use_task(pm.task.name)  # one task of a multi-task run (a per-task method refuses another)
        return _with_knowledgeable(cfg, pm)
    settings = ScoringSettings().override(**given)
    backbone = load_model(cfg.model or DEFAULT_MODEL, device=default_device(cfg.device), max_length=settings.max_length)
    return _with_knowledgeable(cfg, PromptedModel(backbone, None, task, settings=settings))


def _with_knowledgeable(cfg: EvalConfig | PredictConfig, pm):
    """``pm`` with KPT's verbalizer built and refined on the task's training split when ``cfg``
    asks for ``--verbalizer knowledgeable`` (a saved knowledgeable run needs no such option: its
    refined words and prior are reused as saved). KPT's options given without it are named in a
    warning, not silently dropped."""
    if cfg.verbalizer != "knowledgeable":
        defaults = {f.name: field_default(f) for f in dataclasses.fields(cfg)}
        ignored = [name for name in options_in(type(cfg), KNOWLEDGEABLE) if getattr(cfg, name) != defaults[name]]
        if ignored:
            flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
            kept = "the saved run keeps its own verbalizer" if cfg.prompt else "the verbalizer is not knowledgeable"
            logging.getLogger("softprompt").warning("%s ignored: %s (they are read with --verbalizer knowledgeable)", flags, kept)
    if cfg.verbalizer == "knowledgeable":
        from .refinement import knowledgeable_from_config

        from .refinement import describe

        cfg = dataclasses.replace(cfg, word_scoring=pm.settings.word_scoring)
        pm.task.verbalizer = knowledgeable_from_config(cfg, pm.backbone, pm.task).to(pm.backbone.device)
        print(describe(pm.task.verbalizer), file=sys.stderr)
    return pm


def _with_saved_data_dir(cfg: EvalConfig, artifact) -> EvalConfig:
    """``cfg`` with ``data_dir`` taken from the saved run ``artifact`` (read from ``cfg.prompt``) was trained with when
    none is given, so a split is read from the data the run learned from, not from the next
    source in the search order (the bundled sample); a saved folder missing here is named in a
    warning and the search order applies."""
    if cfg.data_dir or artifact is None:
        return cfg
    from pathlib import Path

    saved = (artifact.metadata.get("training") or {}).get("data_dir")
    if not saved:
        return cfg
    if not Path(saved).is_dir():
        logging.getLogger("softprompt").warning(
            "%s was trained on data in %s, which is not here; reading the %s split from the usual sources "
            "($SOFTPROMPT_DATA_DIR, the bundled copy): pass --data-dir to choose", cfg.prompt, saved, cfg.split)
        return cfg
    return dataclasses.replace(cfg, data_dir=saved)


def cmd_eval(cfg: EvalConfig) -> int:
    from .tasks.from_config import load_rows

    task, artifact = _scored_task(cfg)
    if cfg.file:  # the rows are read and checked before any model work; renamed by the task's field map
        rows = task.read_file(cfg.file, limit=cfg.limit)
    else:
        cfg = _with_saved_data_dir(cfg, artifact)
        rows = load_rows(task, cfg, cfg.split, cfg.limit)
    pm = _prompted_model(cfg, task, artifact)
    from .training import mixed_precision

    with mixed_precision(cfg, pm.backbone.device):
        result = pm.evaluate(rows, cfg.batch_size, progress=cfg.progress)
    print(json.dumps({"task": pm.task.name, "split": cfg.file or cfg.split, "data_dir": None if cfg.file else cfg.data_dir,
                      "prompt": cfg.prompt,
                      **({"model_weights": pm.backbone.weights} if pm.backbone.weights else {}),
                      "scoring": pm.settings.scoring, "length_normalize": pm.settings.length_normalize,
                      "word_scoring": pm.settings.word_scoring, **result.summary()}))
    return 0


def cmd_predict(cfg: PredictConfig) -> int:
    from .api import as_examples
    from .tasks.data import read_numbered_lines

    texts = list(cfg.texts)
    names = [f"input {i}" for i in range(len(texts))]  # a bad one is named in the error: its 0-based position
    if texts == ["-"]:
        numbered = read_numbered_lines(sys.stdin)
        texts = [text for _, text in numbered]
        names = [f"input {i} (<stdin>:{line})" for i, (line, _) in enumerate(numbered)]
    if not texts:
        raise SoftPromptError("nothing to predict: pass texts as arguments, or '-' to read lines from stdin")
    task, artifact = _scored_task(cfg)
    rows = as_examples(task, texts, names=names)  # checked before any model work; renamed by the task's field map
    pm = _prompted_model(cfg, task, artifact)
    for text, pred in zip(texts, pm.classify(rows, cfg.batch_size, field_map={}, progress=cfg.progress)):  # rows: renamed already
        # PTR's rules: the words the predicted relation's rule put in each answer slot (why it won)
        slots = pm.task.verbalizer.slot_words(pred.label) if pred.label else None
        if cfg.json:
            print(json.dumps({"input": text, "label": pred.label, "scores": pred.scores, "generated": pred.generated,
                              **({"slots": slots} if slots else {})}))
        else:
            detail = ", ".join(f"{k}={v:.3f}" for k, v in pred.scores.items()) or repr(pred.generated)
            rule = "\t" + " ".join(f"{k}={v!r}" for k, v in slots.items()) if slots else ""
            print(f"{pred.label}{rule}\t{detail}\t{text}")
    return 0


def _natural(name: str) -> list:
    """Sort key reading digit runs as numbers: ``prompts.2.weight`` before ``prompts.10.weight``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def cmd_inspect(cfg: InspectConfig) -> int:
    """Nearest vocabulary tokens of each vector of a saved output: a prompt's positions, or every
    ``[n, dim]`` tensor a method saved (KnowPrompt's answer and type words), each beside its
    starting value where the output keeps one (a tensor ``init.<name>``)."""
    from .artifacts import load_artifact
    from .errors import PromptFileError
    from .interpret import label_words_kept, nearest_tokens
    from .modeling import load_model

    art = load_artifact(cfg.prompt)
    meta = art.metadata
    backbone = load_model(cfg.model or meta.get("model_id"), device=default_device(cfg.device))
    vectors = {n: art.tensors[n] for n in sorted(art.tensors, key=_natural)  # the file's order is not the tasks'
               if art.tensors[n].dim() == 2 and art.tensors[n].shape[1] == backbone.dim}
    prompt_only = set(vectors) == {"prompt"}
    if prompt_only:
        from .prompt import SoftPrompt

        SoftPrompt(vectors["prompt"], meta).check_model(backbone.model_id, backbone.fingerprint, backbone.dim)
    else:
        from .artifacts import check_model

        check_model(meta, backbone.model_id, backbone.fingerprint, backbone.dim, what=f"the {art.kind} output")
    if not vectors:
        raise PromptFileError(f"{cfg.prompt} holds a {art.kind} output with no vectors of the model's width "
                              f"({backbone.dim}) to read: inspect a prompt or a method's vectors")
    cfg.check_k(backbone.model.get_input_embeddings().weight.shape[0])
    row_names, titles = meta.get("row_names") or {}, meta.get("tensor_titles") or {}
    order = [n for n in vectors if not n.startswith("init.")]
    order = [m for n in order for m in (f"init.{n}", n) if m in vectors] + [n for n in vectors if n.startswith("init.")
                                                                            and n[len("init."):] not in vectors]
    for name in order:
        names, title = row_names.get(name) or [], titles.get(name.removeprefix("init."))
        if not prompt_only and not cfg.json:
            print(f"{name}{f' ({title})' if title else ''}{' (at the start)' if name.startswith('init.') else ''}:")
        for nb in nearest_tokens(backbone, vectors[name], cfg.k):
            row = names[nb.position] if nb.position < len(names) else None
            if cfg.json:
                print(json.dumps(nb.__dict__ if prompt_only else {"tensor": name, "title": title, "row": row, **nb.__dict__}))
            else:
                label = f"{row}  " if row else ""
                print(f"{nb.position:4d}  {label}" + "  ".join(f"{t!r}:{s:.2f}" for t, s in zip(nb.tokens, nb.similarities)))
    task = meta.get("task")
    if prompt_only and task and str(meta.get("init", "")).startswith("class-labels") and task["verbalizer"].get("type") == "fixed":
        from .tasks.task import Task

        verbalizer = Task.from_dict(task).verbalizer
        words = [[verbalizer.prefix + w for w in ws] for ws in verbalizer.candidates()]
        kept = label_words_kept(backbone, vectors["prompt"], words, cfg.k)
        print(f"class-label positions keeping their label word among the {cfg.k} nearest tokens: "
              f"{sum(kept)}/{len(kept)} ({', '.join(f'{l}={k}' for l, k in zip(verbalizer.labels, kept))})")
    return 0


def cmd_tasks(_: TasksConfig) -> int:
    from .tasks.registry import BUILTIN_TASKS

    for name, task in BUILTIN_TASKS.items():
        print(f"{name:24s} {task.description}")
    return 0


def cmd_pretrain_prompt(cfg: PretrainConfig) -> int:
    from .ppt.pretrain import pretrain_prompt

    result = pretrain_prompt(cfg)
    print(f"pre-trained prompt: {result.best_prompt}  (dev {json.dumps(result.dev)})")
    if result.best_prompt is not None:
        print(f"use it: softprompt train --init pretrained:{result.best_prompt} --model {cfg.model} "
              f"--prompt-length {cfg.prompt_length} ...")
    print(f"wall time: {result.seconds:.1f} s")
    return 0


def cmd_experiment(cfg: ExperimentConfig) -> int:
    from .experiments import load_experiment, run_experiment, write_report

    from .outdir import check_out_dir, out_lock

    exp = load_experiment(cfg.config, cfg.out)
    main = os.environ.get("RANK", "0") == "0"  # under accelerate/torchrun rank 0 checks and locks the folder
    if main and not cfg.dry_run:
        check_out_dir(exp.out)
    with out_lock(exp.out, enabled=main and not cfg.dry_run):
        if cfg.report_only:
            print(f"report: {write_report(exp)}")
            return 0
        summary = run_experiment(exp, only=cfg.only, tasks=cfg.tasks, dry_run=cfg.dry_run, progress=cfg.progress)
    print(json.dumps(summary))
    return 0


def cmd_serve(cfg: ServeConfig) -> int:
    from .serving.app import serve

    return serve(cfg)


def cmd_export_peft(cfg: ExportPeftConfig) -> int:
    from .peft_compat import export_command

    return export_command(cfg)


def cmd_import_peft(cfg: ImportPeftConfig) -> int:
    from .peft_compat import import_command

    return import_command(cfg)


def cmd_label_words(cfg: LabelWordsConfig) -> int:
    from .modeling import load_model
    from .refinement import expand_label_words
    from .tasks.from_config import task_from_config
    from .tasks.label_words import write_label_words

    task = task_from_config(cfg)
    backbone = load_model(cfg.model, device=default_device(cfg.device))
    names = {label: ws[0] for label, ws in zip(task.verbalizer.labels, task.verbalizer.candidates())}
    words = expand_label_words(backbone, names, cfg.per_label, task.verbalizer.prefix)
    path = write_label_words(cfg.out, words)
    print(f"wrote {sum(map(len, words.values()))} label words for {len(words)} labels to {path} "
          f"(labels in order: {', '.join(words)}); edit it, then pass --verbalizer knowledgeable --label-words-file {path}")
    return 0


class Command(NamedTuple):
    """A ``softprompt`` command: what runs it (given the command's config, its dataclass in
    :data:`softprompt.config.COMMAND_CONFIGS`), its one-line help, whether it reads
    ``--config FILE.yaml``, and its longer description."""

    handler: Callable[[Any], int]
    help: str
    yaml: bool = True
    description: str | None = None


COMMANDS: dict[str, Command] = {
    "train": Command(cmd_train, "train a soft prompt on a task"),
    "eval": Command(cmd_eval, "evaluate a saved output of any method (or the zero-shot baseline) on a split or file"),
    "predict": Command(cmd_predict, "classify texts with a saved output of any method"),
    "tasks": Command(cmd_tasks, "list the built-in tasks", yaml=False),
    "pretrain-prompt": Command(cmd_pretrain_prompt, "pre-train a prompt on PPT's self-supervised formats built from unlabeled text"),
    "export-peft": Command(cmd_export_peft, "write a saved prompt as a PEFT prompt-tuning adapter", yaml=False),
    "import-peft": Command(cmd_import_peft, "read a PEFT prompt-tuning adapter as a softprompt prompt", yaml=False),
    "serve": Command(cmd_serve, "serve many saved outputs over HTTP", description=ServeConfig.__doc__),
    "label-words": Command(cmd_label_words, "expand each label's class name into label words from the model's embedding neighbours (KPT), written to a file"),
    "inspect": Command(cmd_inspect, "nearest vocabulary tokens of each vector of a saved prompt or method output (its starting vectors too, where kept)", yaml=False),
    "experiment": Command(cmd_experiment, "run a grid of runs and analyses from a YAML file, then write its report",
                          yaml=False, description="Run every missing run and analysis of an experiment file (finished ones are "
                                      "skipped, interrupted ones resume), then write report.md and plots."),
}


VERBOSE = ("-v", "--verbose")
"""The one option of the ``softprompt`` command itself, not of a config: accepted before the
command (``softprompt -v train ...``) and after it (``softprompt train ... -v``), the same."""
_VERBOSE_HELP = "log more, and print an error's traceback"


def build_parser() -> argparse.ArgumentParser:
    """The ``softprompt`` parser: one subcommand per entry of :data:`COMMANDS`, its options
    generated from its config (:func:`softprompt.arguments.add_options`)."""
    parser = argparse.ArgumentParser(prog="softprompt", description="Prompt tuning on frozen language models.")
    parser.add_argument(*VERBOSE, action="store_true", help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    parser.set_defaults(command_parsers=sub.choices)  # main() names an unknown option against its command's
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help)
        # the same flag after the command (softprompt train ... -v); left out, it keeps the value given before it
        p.add_argument(*VERBOSE, action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
        add_options(p, COMMAND_CONFIGS[name], yaml=cmd.yaml, helps=COMMAND_HELP.get(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``softprompt`` command; returns the exit status (2 for a usage or input error)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's usage and the nearest option, not the top-level usage
        command = args.command_parsers[args.command]
        flags = [s for action in command._actions for s in action.option_strings]
        hints = [f"{u} (did you mean {close}?)" if (close := nearest(u.split("=")[0], flags)) else u for u in unknown]
        command.error(f"unrecognized arguments: {' '.join(hints)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        cmd = COMMANDS[args.command]
        config = config_from_args(COMMAND_CONFIGS[args.command], args, yaml=cmd.yaml)
        with progress_bars(not isinstance(config, ProgressOptions) or config.progress):  # the model-loading bars too
            code = cmd.handler(config)
        sys.stdout.flush()  # a reader that left is found here, not in the interpreter's exit
        return code
    except SoftPromptError as exc:
        if args.verbose:  # where it was raised, for a bug report; the short message stays last
            traceback.print_exc()
        print(f"softprompt: error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:  # asked to stop: the step ended and its checkpoint was saved
        print(f"softprompt: {exc}; {_resume_hint(args.command)}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training steps
        hint = _resume_hint(args.command)
        print(f"softprompt: interrupted{f'; {hint} (from its last checkpoint)' if hint else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`softprompt predict ... | head`): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 1


def _resume_hint(command: str) -> str:
    """How an interrupted ``command`` goes on: empty for a command that trains nothing."""
    if command == "experiment":
        return "run the same command again: finished runs are kept and the interrupted one resumes"
    if command in ("train", "pretrain-prompt"):
        return "a training run continues with the same command and --resume"
    return ""


def entry() -> None:
    """The ``softprompt`` command (and ``python -m softprompt.cli``): :func:`main`, then exit.

    A process that joined a process group (under ``torchrun`` or ``accelerate launch``) closes the
    group and leaves with ``os._exit`` once its output is flushed. Interpreter teardown is not
    safe there: a gloo worker thread may still hold the last collective's tensors, and dropping
    them needs the GIL that teardown has taken away, so the process aborted ("terminate called
    without an active exception") in about 1 run in 8, after its work was done and saved."""
    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    except BaseException:
        if not _distributed():
            raise
        traceback.print_exc()
        code = 1
    if not _distributed():
        sys.exit(code)
    import torch.distributed as dist

    dist.destroy_process_group()
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _distributed() -> bool:
    """Whether this process joined a process group that is still open."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


if __name__ == "__main__":
    entry()
