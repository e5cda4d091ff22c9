"""Multi-token verbalizer words on SmolLM2: today's flattened (row, word) pairs against the
shared-text continuation path, in one process.

KPT's AG News word lists (OpenPrompt's ``knowledgeable_verbalizer.txt``, in the shared data): per
label the first ``--words`` words that are two or more SmolLM2 tokens after the template (words
listed under two labels kept for both: ``shared_words=True``), scored on the first
``--snippets`` validation snippets, zero-shot (the text is the cost; a prompt's keys/values are
computed once per batch either way).

* **flattened pairs** (the path before issue 15): ``context + word`` as one sequence per
  (row, word) pair, every pair's text run again; run here in chunks of ``--chunk`` pairs so it fits
  in memory (the same work as one call);
* **shared text**: :meth:`Backbone.word_scores`: the text once, its keys/values kept, all of a
  row's words as one batched continuation against them.

It prints the time of each, their ratio and the largest absolute difference of the scores.

    python benchmarks/verbalizer_words.py                       # 32 snippets x 4 labels x 100 words
    python benchmarks/verbalizer_words.py --snippets 4 --words 10   # a quick look
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
from softprompt.tasks.registry import get_task, load_split
from softprompt.tasks.verbalizer import Verbalizer

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOFTPROMPT_SHARED_DATA", REPO.parent / "shared" / "data"))
LABELS = ("world", "sports", "business", "sci/tech")  # the lines of KPT's agnews list, in order


def kpt_words(backbone, per_label: int) -> dict[str, list[str]]:
    """The first ``per_label`` words of each AG News label that are two or more tokens."""
    lines = (SHARED / "kpt_label_words" / "agnews" / "knowledgeable_verbalizer.txt").read_text().splitlines()
    out = {}
    for label, line in zip(LABELS, [ln for ln in lines if ln.strip()]):
        words = list(dict.fromkeys(w.strip() for w in line.split(",") if w.strip()))
        multi = [w for w in words if len(backbone.tokenize(" " + w)) >= 2]
        if len(multi) < per_label:
            raise SystemExit(f"label {label!r} has only {len(multi)} multi-token words")
        out[label] = multi[:per_label]
    return out


@torch.no_grad()
def flattened_pairs(backbone, batch, chunk: int) -> torch.Tensor:
    """Scores ``[batch, max_words]`` as before issue 15: one sequence ``lead + context + word`` per
    (row, word) pair, the summed log-probabilities of the word's tokens."""
    lead = backbone.lead_ids
    pairs = [(b, w) for b, ws in enumerate(batch.words) for w in range(len(ws))]
    head = backbone.model.get_output_embeddings()
    flat = []
    for start in range(0, len(pairs), chunk):
        part = pairs[start: start + chunk]
        seqs = [lead + batch.context[b] + batch.words[b][w] for b, w in part]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), backbone.pad_id)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
        hidden = backbone.model.base_model(input_ids=ids.to(backbone.device),
                                           attention_mask=mask.to(backbone.device)).last_hidden_state
        rows, cols, targets, owner = [], [], [], []
        for i, (b, w) in enumerate(part):
            word = batch.words[b][w]
            for j, tok in enumerate(word):
                rows.append(i)
                cols.append(len(lead) + len(batch.context[b]) - 1 + j)
                targets.append(tok)
                owner.append(i)
        lp = torch.log_softmax(head(hidden[rows, cols]).float(), -1)
        tok_lp = lp.gather(-1, torch.tensor(targets, device=lp.device)[:, None]).squeeze(-1)
        flat.append(torch.zeros(len(part), device=lp.device).index_add(0, torch.tensor(owner, device=lp.device), tok_lp))
    flat = torch.cat(flat)
    out = flat.new_full((len(batch), max(len(ws) for ws in batch.words)), float("-inf"))
    for i, (b, w) in enumerate(pairs):
        out[b, w] = flat[i]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snippets", type=int, default=32, help="rows in the batch")
    ap.add_argument("--words", type=int, default=100, help="multi-token words per label (4 labels)")
    ap.add_argument("--chunk", type=int, default=256, help="pairs per forward on the flattened path")
    ap.add_argument("--flat-rows", type=int, help="time the flattened path on the first N rows only (all their "
                    "words) and scale its time to the whole batch by the tokens it runs (default: every row)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    backbone = load_model()
    task = get_task("ag_news")
    task.verbalizer = Verbalizer(kpt_words(backbone, args.words), shared_words=True)
    rows = load_split(task, "validation", data_dir=SHARED, limit=args.snippets)
    batch = encode(backbone, task, rows, with_labels=False)
    n_pairs = sum(len(ws) for ws in batch.words)
    word_tokens = [len(w) for ws in batch.words for w in ws]
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, model {backbone.model_id}, "
          f"{len(batch)} snippets x {n_pairs // len(batch)} words = {n_pairs} pairs; text "
          f"{sum(map(len, batch.context)) / len(batch):.1f} tokens a row, words "
          f"{sum(word_tokens) / len(word_tokens):.2f} tokens on average (max {max(word_tokens)})", flush=True)

    with torch.no_grad():  # warm-up on one row, both paths
        one = batch.select([0])
        backbone.word_scores(None, one)
        flattened_pairs(backbone, one, args.chunk)
        t0 = time.perf_counter()
        shared = backbone.word_scores(None, batch)
        t_shared = time.perf_counter() - t0
    print(f"shared text: {t_shared:.2f} s", flush=True)
    k = min(args.flat_rows or len(batch), len(batch))
    part = batch.select(list(range(k)))
    t0 = time.perf_counter()
    flat = flattened_pairs(backbone, part, args.chunk)
    t_measured = time.perf_counter() - t0

    def pair_tokens(b) -> int:  # tokens the flattened path runs: every pair's text and word
        return sum(len(b.context[r]) + len(w) for r in range(len(b)) for w in b.words[r])

    t_flat = t_measured * pair_tokens(batch) / pair_tokens(part)
    scaled = f" (measured {t_measured:.2f} s on {k} rows, scaled by tokens)" if k < len(batch) else ""
    print(f"flattened pairs: {t_flat:.2f} s{scaled}", flush=True)

    mine = shared[:k]
    finite = torch.isfinite(flat)
    assert torch.equal(finite, torch.isfinite(mine[:, : flat.shape[1]]))
    diff = float((mine[:, : flat.shape[1]] - flat)[finite].abs().max())
    same_argmax = float((mine.argmax(1) == flat.argmax(1)).float().mean())
    result = {"snippets": len(batch), "words_per_label": args.words, "pairs": n_pairs,
              "flattened_s": round(t_flat, 3), "flattened_rows_measured": k, "shared_text_s": round(t_shared, 3),
              "speedup": round(t_flat / t_shared, 2), "max_abs_diff": diff, "same_top_word": same_argmax,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"speed-up {t_flat / t_shared:.1f}x; max |score difference| {diff:.2e} (over {k} rows); same top word "
          f"in {same_argmax:.0%} of them")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
