"""Pre-train a soft prompt on PPT's self-supervised formats: :func:`pretrain_prompt`.

The examples are built from the corpus and written to ``out/data/{train,validation}.jsonl``;
the prompt is then trained by :func:`softprompt.training.train` on those files, so
checkpoints, ``--resume`` and several processes (accelerate, torchrun) work as for any task.
Dev examples come from documents held out of training (:func:`~softprompt.ppt.formats.hold_out`).

Every format reaches ``train`` through ``TrainConfig``'s ``train_file`` / ``validation_file`` /
``template`` / ``label_words``, like any user's own data; the multiple-choice formats (``choice``,
``unified``) use ``label_words='choices:choices'`` (each row lists its candidates).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..config import TrainConfig, resume_conflict
from ..errors import ConfigError
from ..outdir import check_out_dir, out_lock, output_errors
from ..prompt import SoftPrompt
from ..tasks.data import write_examples
from .config import PretrainConfig
from .corpus import file_sha256, read_corpus
from .formats import build_examples, get_format, hold_out

log = logging.getLogger(__name__)

INFO_FILE = "ppt.json"
_RUN_KEYS = ("format", "corpus_sha256", "options", "seed", "examples", "template", "label_words")
"""What must match for ``--resume`` to continue a run: the same data, the same task."""
_RUN_OPTIONS = {"format": "--format", "corpus_sha256": "--corpus (its text's sha256)", "options": "--options",
                "seed": "--seed", "examples": "--examples", "template": "the format's template",
                "label_words": "the format's label words"}
"""How a message names each of :data:`_RUN_KEYS`."""


def pretrain_prompt(config: PretrainConfig | None = None, **overrides: Any):
    """Build PPT pre-training data from ``config.corpus`` and train a prompt on it.

    Writes ``out/data/``, ``out/ppt.json`` (the format, corpus path and sha256, example counts,
    template and label words) and everything ``softprompt train`` writes; ``out/best`` (the
    prompt with the best dev accuracy) and ``out/last`` carry the same information under the
    ``"ppt"`` key of their metadata. Use the result with ``softprompt train --init
    pretrained:OUT/best`` (same ``--model`` and ``--prompt-length``). Returns the
    :class:`~softprompt.training.TrainResult`. ``out`` is checked writable before any work and
    locked for the run (:mod:`softprompt.outdir`): a second run into it raises :class:`ConfigError`.
    """
    cfg = dataclasses.replace(config, **overrides) if config else PretrainConfig(**overrides)
    main = _is_main_process()
    training_config(cfg, Path(cfg.out) / "data")  # the options and the corpus first: nothing is created for a wrong one
    documents = read_corpus(Path(cfg.corpus))
    if main:
        check_out_dir(cfg.out)
    with out_lock(cfg.out, enabled=main), output_errors(cfg.out):
        return _pretrain_prompt(cfg, documents)


def _pretrain_prompt(cfg: PretrainConfig, documents):
    """:func:`pretrain_prompt` once the corpus is read and ``out`` is checked and locked."""
    fmt = get_format(cfg.format)
    task = fmt.task()
    out, corpus = Path(cfg.out), Path(cfg.corpus)
    data = out / "data"
    train_cfg = training_config(cfg, data)  # checks the training options before any work
    info: dict[str, Any] = {
        "paper": "PPT: Pre-trained Prompt Tuning for Few-shot Learning (Gu, Han, Liu & Huang, 2021)",
        "format": cfg.format, "corpus": str(corpus.resolve()), "corpus_sha256": file_sha256(corpus),
        "options": cfg.options if fmt.label_words is None else None, "seed": cfg.seed,
        "examples": {"train": cfg.examples, "validation": cfg.dev_examples},
        "template": fmt.template, "label_words": fmt.label_words, "verbalizer": task.verbalizer.to_dict(),
    }
    if _is_main_process():  # rank 0 alone: the others could find the ppt.json rank 0 has just written
        _check_out(out, cfg, info)

    share = cfg.dev_examples / (cfg.examples + cfg.dev_examples)
    train_docs, dev_docs = hold_out(documents, share, cfg.seed)
    train_rows = build_examples(train_docs, cfg.format, cfg.examples, cfg.seed, cfg.options,
                                where=f"{corpus} ({len(train_docs)} training documents)")
    dev_rows = build_examples(dev_docs, cfg.format, cfg.dev_examples, cfg.seed + 1, cfg.options,
                              where=f"{corpus} ({len(dev_docs)} documents held out for dev examples; "
                                    "more --dev-examples hold out more)")
    info["documents"] = {"corpus": len(documents), "train": len(train_docs), "validation": len(dev_docs)}
    info["data"] = {"train": train_cfg.train_file, "validation": train_cfg.validation_file}
    # every process writes the same bytes atomically, so none reads a half-written file
    write_examples(train_cfg.train_file, train_rows)
    write_examples(train_cfg.validation_file, dev_rows)
    if _is_main_process():
        atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    log.info("PPT %s: %d training and %d dev examples from %d documents of %s", cfg.format, len(train_rows),
             len(dev_rows), len(documents), corpus)

    from ..training import train

    result = train(train_cfg)
    if _is_main_process():
        for name in ("best", "last"):
            if (out / name).exists():
                prompt = SoftPrompt.load(out / name)
                prompt.save(out / name, {"ppt": info})
    return result


def training_config(cfg: PretrainConfig, data: Path) -> TrainConfig:
    """The :class:`TrainConfig` that trains ``cfg``'s prompt on the files in ``data``.

    Options the two configs share are copied; there is no test split and no zero-shot baseline
    (pre-training data has no test set worth the time).
    """
    fmt = get_format(cfg.format)
    shared = {f.name for f in dataclasses.fields(PretrainConfig)} & {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(
        task=fmt.task().name, train_file=str(data / "train.jsonl"), validation_file=str(data / "validation.jsonl"),
        template=fmt.template, label_words=fmt.label_words_spec,
        test_split="", zero_shot_baseline=False, **{name: getattr(cfg, name) for name in sorted(shared)},
    )


def _check_out(out: Path, cfg: PretrainConfig, info: dict[str, Any]) -> None:
    """Refuse to mix runs: an existing run needs --resume (with the same data) or --overwrite."""
    marker = out / INFO_FILE
    if cfg.resume:
        if not marker.exists():
            raise ConfigError(f"--resume: {out} holds no PPT pre-training run (no {INFO_FILE}); start without --resume")
        try:
            saved = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            saved = exc
        if not isinstance(saved, dict):
            raise ConfigError(f"--resume: {marker} is damaged ({saved if isinstance(saved, Exception) else 'not a JSON object'}); "
                              "pass --overwrite to start afresh")
        changed = [key for key in _RUN_KEYS if saved.get(key) != info.get(key)]
        if changed:  # the message of every run --resume cannot change (softprompt.config.resume_conflict)
            raise resume_conflict(out, [(_RUN_OPTIONS[k], saved.get(k), info.get(k)) for k in changed],
                                  "give the run's corpus and options")
    elif marker.exists() and not cfg.overwrite:
        raise ConfigError(f"{out} already holds a PPT pre-training run: pass --resume to continue it, --overwrite to "
                          "start afresh, or choose another --out")


def _is_main_process() -> bool:
    """Rank 0, or the only process (accelerate and torchrun set ``RANK``)."""
    return os.environ.get("RANK", "0") == "0"
