"""The ``softprompt`` command. Options are generated from the config dataclasses in
:mod:`softprompt.config`; ``--config FILE.yaml`` loads the same options from YAML (command-line
options win)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import traceback
import typing
from typing import Any, Callable

from .config import EvalConfig, InspectConfig, PredictConfig, TrainConfig, build, field_default, load_yaml
from .ppt.config import PretrainConfig
from .errors import SoftPromptError


def _base_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    """One option per field of ``cls``: type, default, help and choices come from the field."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        tp = _base_type(hints[f.name])
        default = field_default(f)
        help_text = meta.get("help", "")
        if "(default:" not in help_text:
            help_text += f" (default: {default!r})"
        if meta.get("positional"):
            parser.add_argument(f.name, nargs="*", default=argparse.SUPPRESS, help=meta.get("help"))
            continue
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=tp if tp in (int, float) else str, default=argparse.SUPPRESS,
                                choices=meta.get("choices"), help=help_text, dest=f.name)


def config_from_args(cls, args: argparse.Namespace):
    """YAML values (if ``--config``), then the options given on the command line."""
    source = getattr(args, "config", None)
    values: dict[str, Any] = load_yaml(source) if source else {}
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return build(cls, values, source)  # command-line values come typed by argparse: a wrong type is the file's


def cmd_train(cfg: TrainConfig) -> int:
    from .training import train

    result = train(cfg)
    print(f"best prompt: {result.best_prompt}  (dev {json.dumps(result.dev)})")
    if result.test is not None:
        primary, split = next(iter(result.test)), result.test_split
        print(f"{split} {primary} with the learned prompt: {result.test[primary]:.4f}  ({json.dumps(result.test)})")
        if result.zero_shot_test is not None:
            print(f"{split} {primary} zero-shot (same template and verbalizer, no prompt): "
                  f"{result.zero_shot_test[primary]:.4f}  ({json.dumps(result.zero_shot_test)})")
    print(f"wall time: {result.seconds:.1f} s")
    return 0


def _prompted_model(cfg: EvalConfig | PredictConfig):
    """The saved prompt of ``cfg.prompt`` (its training settings as defaults), or a zero-shot model
    for ``--task`` / ``--template`` and ``--label-words``; either with those options applied."""
    from .api import PromptedModel, ScoringSettings
    from .modeling import DEFAULT_MODEL, load_model
    from .tasks.from_config import task_from_config

    given = {"scoring": cfg.scoring, "length_normalize": cfg.length_normalize, "max_length": cfg.max_length,
             "word_scoring": cfg.word_scoring}
    if cfg.prompt:
        pm = PromptedModel.from_saved(cfg.prompt, model=cfg.model, device=cfg.device, **given)
        if cfg.task or cfg.template or cfg.label_words:  # another task's format (domain transfer), or your own
            pm.task = task_from_config(cfg, base=pm.task)
        return pm
    if not (cfg.task or (cfg.template and cfg.label_words)):
        raise SoftPromptError("give --prompt DIR (a saved prompt, e.g. runs/rt/best), or for zero-shot scoring "
                              "--task NAME, or --template and --label-words (and --model)")
    task = task_from_config(cfg)
    settings = ScoringSettings().override(**given)
    backbone = load_model(cfg.model or DEFAULT_MODEL, device=cfg.device)
    backbone.max_length = min(backbone.max_length, settings.max_length)
    return PromptedModel(backbone, None, task, settings=settings)


def cmd_eval(cfg: EvalConfig) -> int:
    from .tasks.data import read_examples
    from .tasks.from_config import load_rows, parse_field_map

    pm = _prompted_model(cfg)
    if cfg.file:
        rows = read_examples(cfg.file, field_map=parse_field_map(cfg.field_map), limit=cfg.limit)
        pm.task.validate(rows, where=cfg.file)
    else:
        rows = load_rows(pm.task, cfg, cfg.split, cfg.limit)
    from .training import mixed_precision

    with mixed_precision(cfg, pm.backbone.device):
        result = pm.evaluate(rows, cfg.batch_size, progress=cfg.progress)
    print(json.dumps({"task": pm.task.name, "split": cfg.file or cfg.split, "prompt": cfg.prompt,
                      "scoring": pm.settings.scoring, "length_normalize": pm.settings.length_normalize,
                      **result.summary()}))
    return 0


def cmd_predict(cfg: PredictConfig) -> int:
    from .tasks.data import read_lines
    from .tasks.from_config import parse_field_map

    texts = list(cfg.texts)
    if texts == ["-"]:
        texts = read_lines(sys.stdin)
    if not texts:
        raise SoftPromptError("nothing to predict: pass texts as arguments, or '-' to read lines from stdin")
    pm = _prompted_model(cfg)
    for text, pred in zip(texts, pm.classify(texts, cfg.batch_size, field_map=parse_field_map(cfg.field_map))):
        if cfg.json:
            print(json.dumps({"input": text, "label": pred.label, "scores": pred.scores, "generated": pred.generated}))
        else:
            detail = ", ".join(f"{k}={v:.3f}" for k, v in pred.scores.items()) or repr(pred.generated)
            print(f"{pred.label}\t{detail}\t{text}")
    return 0


def cmd_inspect(args: Any) -> int:
    from .interpret import label_words_kept, nearest_tokens
    from .modeling import load_model
    from .prompt import SoftPrompt

    args = build(InspectConfig, {k: getattr(args, k) for k in ("prompt", "k", "model", "json")})
    prompt = SoftPrompt.load(args.prompt)
    backbone = load_model(args.model or prompt.metadata.get("model_id"))
    prompt.check_model(backbone.model_id, backbone.fingerprint, backbone.dim)
    args.check_k(backbone.model.get_input_embeddings().weight.shape[0])
    rows = nearest_tokens(backbone, prompt.weight, args.k)
    for nb in rows:
        if args.json:
            print(json.dumps(nb.__dict__))
        else:
            print(f"{nb.position:4d}  " + "  ".join(f"{t!r}:{s:.2f}" for t, s in zip(nb.tokens, nb.similarities)))
    task = prompt.metadata.get("task")
    if task and str(prompt.metadata.get("init", "")).startswith("class-labels") and task["verbalizer"].get("type") == "fixed":
        from .tasks.task import Task

        verbalizer = Task.from_dict(task).verbalizer
        words = [[verbalizer.prefix + w for w in ws] for ws in verbalizer.candidates()]
        kept = label_words_kept(backbone, prompt.weight, words, args.k)
        print(f"class-label positions keeping their label word among the {args.k} nearest tokens: "
              f"{sum(kept)}/{len(kept)} ({', '.join(f'{l}={k}' for l, k in zip(verbalizer.labels, kept))})")
    return 0


def cmd_tasks(_: Any) -> int:
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


COMMANDS: dict[str, tuple[Any, Callable[[Any], int], str]] = {
    "train": (TrainConfig, cmd_train, "train a soft prompt on a task"),
    "eval": (EvalConfig, cmd_eval, "evaluate a saved prompt (or the zero-shot baseline) on a split or file"),
    "predict": (PredictConfig, cmd_predict, "classify texts with a saved prompt"),
    "tasks": (None, cmd_tasks, "list the built-in tasks"),
    "pretrain-prompt": (PretrainConfig, cmd_pretrain_prompt, "pre-train a prompt on PPT's self-supervised formats built from unlabeled text"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softprompt", description="Prompt tuning on frozen language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if cls is not None:
            p.add_argument("--config", help="YAML file of options (command-line options override it)")
            add_dataclass_options(p, cls)
    from .peft_compat import add_cli as add_peft_cli

    add_peft_cli(sub)
    from .serving.app import add_cli as add_serve_cli

    add_serve_cli(sub)
    p = sub.add_parser("inspect", help="nearest vocabulary tokens of each vector of a saved prompt")
    p.add_argument("prompt", help="saved prompt directory")
    p.add_argument("--k", type=int, default=5, help="neighbours per position (default: 5)")
    p.add_argument("--model", help="model (default: the one the prompt was trained for)")
    p.add_argument("--json", action="store_true", help="one JSON object per position")
    p.set_defaults(handler=cmd_inspect)
    p = sub.add_parser("experiment", help="run a grid of runs and analyses from a YAML file, then write its report",
                       description="Run every missing run and analysis of an experiment file (finished ones are "
                                   "skipped, interrupted ones resume), then write report.md and plots.")
    p.add_argument("config", help="experiment YAML (see experiments/quick.yaml)")
    p.add_argument("--out", help="results folder (default: the file's out:)")
    p.add_argument("--only", nargs="+", metavar="GRID", help="run only these grids (no analyses)")
    p.add_argument("--tasks", nargs="+", metavar="TASK",
                   help="run only the runs of these tasks, e.g. the cheap ones first (no analyses)")
    p.add_argument("--dry-run", action="store_true", help="list runs and analyses, done or to do, and stop")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from stored results, run nothing")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=cmd_experiment)
    return parser


def cmd_experiment(args: Any) -> int:
    from .experiments import load_experiment, run_experiment, write_report

    from .outdir import check_out_dir, out_lock

    exp = load_experiment(args.config, args.out)
    main = os.environ.get("RANK", "0") == "0"  # under accelerate/torchrun rank 0 checks and locks the folder
    if main and not args.dry_run:
        check_out_dir(exp.out)
    with out_lock(exp.out, enabled=main and not args.dry_run):
        if args.report_only:
            print(f"report: {write_report(exp)}")
            return 0
        summary = run_experiment(exp, only=args.only, tasks=args.tasks, dry_run=args.dry_run, progress=args.progress)
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one ``softprompt`` command; returns the exit status (2 for a usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if hasattr(args, "handler"):
            return args.handler(args)
        cls, handler, _ = COMMANDS[args.command]
        return handler(config_from_args(cls, args) if cls is not None else args)
    except SoftPromptError as exc:
        print(f"softprompt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("softprompt: interrupted; a training run continues with --resume", file=sys.stderr)
        return 130


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
