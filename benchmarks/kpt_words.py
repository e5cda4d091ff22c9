"""The cost of scoring KPT's AG News word list (about 1,380 words after duplicates) on SmolLM2,
against the one-word-per-label verbalizer, zero-shot, batches of 32 test rows (issue 16).

Each batch is new rows (as in an evaluation), timed as ``encode`` (rendering, truncation, each
word's ids in context) plus scoring (``label_scores``: the forward pass and the aggregation):

* **manual**: the built-in ag_news verbalizer (4 words), first-token scoring;
* **KPT first-token**: the whole list, each word scored by its first token (OpenPrompt's way,
  the experiment's ``--word-scoring first-token``);
* **KPT exact**: the whole list, whole-word likelihoods, timed on ``--exact-rows`` rows and
  scaled to a batch (every multi-token word is a continuation of every row).

    python benchmarks/kpt_words.py                    # 3 batches of 32, exact on 2 rows
    python benchmarks/kpt_words.py --batches 1 --exact-rows 0
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from softprompt.encoding import encode
from softprompt.modeling import load_model
from softprompt.refinement import resolve_duplicates
from softprompt.scoring import label_scores
from softprompt.tasks.knowledgeable import KnowledgeableVerbalizer
from softprompt.tasks.label_words import read_label_words
from softprompt.tasks.registry import get_task, load_split

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOFTPROMPT_SHARED_DATA", REPO.parent / "shared" / "data"))


@torch.no_grad()
def timed(backbone, task, rows, word_scoring: str) -> tuple[float, float]:
    """Seconds to encode and to score ``rows`` (one batch)."""
    t0 = time.perf_counter()
    batch = encode(backbone, task, rows)
    t1 = time.perf_counter()
    label_scores(backbone, task, batch, None, word_scoring=word_scoring)
    return t1 - t0, time.perf_counter() - t1


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=3, help="batches of 32 timed per verbalizer (new rows each)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--exact-rows", type=int, default=2, help="rows the exact path is timed on (0: skip)")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    backbone = load_model(dtype=getattr(torch, args.dtype))
    manual = get_task("ag_news")
    kpt = get_task("ag_news")
    read = read_label_words(SHARED / "kpt_label_words" / "agnews" / "knowledgeable_verbalizer.txt", kpt.verbalizer.labels)
    words, _ = resolve_duplicates(read.words)
    kpt.verbalizer = KnowledgeableVerbalizer(words, calibrate=False)
    n_words = sum(map(len, words.values()))
    rows = load_split(manual, "test", data_dir=SHARED, limit=args.batch_size * (2 * args.batches + 1))
    bs = args.batch_size
    timed(backbone, manual, rows[:2], "first-token")  # warm-up
    timed(backbone, kpt, rows[:2], "first-token")
    out = {"words": n_words, "batch_size": bs, "threads": torch.get_num_threads(), "dtype": args.dtype,
           "torch": torch.__version__}
    for name, task, offset in (("manual_first_token", manual, 1), ("kpt_first_token", kpt, 1 + args.batches)):
        enc = score = 0.0
        for b in range(args.batches):
            e, s = timed(backbone, task, rows[(offset + b) * bs: (offset + b + 1) * bs], "first-token")
            enc, score = enc + e, score + s
        out[name] = {"encode_s_per_batch": round(enc / args.batches, 2), "score_s_per_batch": round(score / args.batches, 2),
                     "s_per_batch": round((enc + score) / args.batches, 2)}
        print(name, out[name], flush=True)
    if args.exact_rows:
        e, s = timed(backbone, kpt, rows[bs: bs + args.exact_rows], "exact")
        out["kpt_exact"] = {"rows_measured": args.exact_rows,
                            "s_per_batch_scaled": round((e + s) * bs / args.exact_rows, 1)}
        print("kpt_exact", out["kpt_exact"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
