"""Build a PPT pre-training corpus from BoolQ *train* passages, disjoint from every evaluation split.

    python experiments/build_ppt_corpus.py --out runs/ppt_corpus.txt [--data /work/shared/data]

BoolQ passages are Wikipedia paragraphs of several sentences (docs: /work/shared/data/README.md).
This script

1. reads the passages of ``boolq/train.jsonl`` and drops the ``"<title> -- "`` prefix of each;
2. removes duplicates (the same paragraph serves several questions), by their text with white
   space collapsed and case folded;
3. drops every passage that also occurs in ``boolq/validation.jsonl`` (720 do);
4. drops every passage sharing a sentence of at least ``--min-shared-words`` words with any text
   field of any task's ``validation`` or ``test`` split in the data folder, so no evaluation text
   is seen in pre-training;
5. keeps passages of at least ``--min-sentences`` sentences (softprompt.ppt's splitter);

and writes one document per blank-line-separated block (the file given by ``--out``), printing
the counts. The output is data: do not commit it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from softprompt.atomic import atomic_write_text
from softprompt.ppt.corpus import file_sha256, read_corpus, split_sentences

DEFAULT_DATA = Path(os.environ.get("SOFTPROMPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
EVAL_SPLITS = ("validation", "test")


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _body(passage: str) -> str:
    """A BoolQ passage without its ``"<Wikipedia title> -- "`` prefix."""
    title, sep, body = passage.partition(" -- ")
    return body.strip() if sep else passage.strip()


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _texts(row: dict) -> list[str]:
    """Every text of an example: its string fields (label and idx aside) and the items of list fields."""
    out = []
    for key, value in row.items():
        if key in ("label", "idx"):
            continue
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(v for v in value if isinstance(v, str))
    return out


def evaluation_sentences(data: Path, min_words: int) -> tuple[set[str], list[str]]:
    """Sentences (as keys) of at least ``min_words`` words in every task's evaluation splits, and the files read."""
    sentences: set[str] = set()
    files = sorted(p for split in EVAL_SPLITS for p in data.glob(f"*/{split}.jsonl"))
    for path in files:
        for row in _jsonl(path):
            for text in _texts(row):
                for sentence in split_sentences(_body(text) if path.parent.name == "boolq" else text):
                    if len(sentence.split()) >= min_words:
                        sentences.add(_key(sentence))
    return sentences, [str(p.relative_to(data)) for p in files]


def build(data: Path, min_sentences: int, min_shared_words: int) -> tuple[list[str], dict[str, int]]:
    """The corpus documents (in BoolQ train order) and the counts of what was kept and dropped."""
    train = [_body(r["passage"]) for r in _jsonl(data / "boolq" / "train.jsonl")]
    validation = {_key(_body(r["passage"])) for r in _jsonl(data / "boolq" / "validation.jsonl")}
    eval_sentences, files = evaluation_sentences(data, min_shared_words)
    counts = {"boolq train passages": len(train), "evaluation files checked": len(files),
              "evaluation sentences": len(eval_sentences)}
    seen: set[str] = set()
    docs: list[str] = []
    dropped = {"duplicate": 0, "in boolq validation": 0, "shares a sentence with an evaluation split": 0,
               f"fewer than {min_sentences} sentences": 0}
    for passage in train:
        key = _key(passage)
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        sentences = split_sentences(passage)
        if key in validation:
            dropped["in boolq validation"] += 1
        elif any(_key(s) in eval_sentences for s in sentences):
            dropped["shares a sentence with an evaluation split"] += 1
        elif len(sentences) < min_sentences:
            dropped[f"fewer than {min_sentences} sentences"] += 1
        else:
            docs.append(" ".join(passage.split()))
    counts.update({f"dropped: {k}": v for k, v in dropped.items()})
    counts["documents written"] = len(docs)
    return docs, counts


def main(argv: list[str] | None = None) -> int:
    """Build the corpus and print its counts; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="corpus file to write (documents separated by blank lines)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=f"the shared data folder (default: {DEFAULT_DATA})")
    parser.add_argument("--min-sentences", type=int, default=3,
                        help="keep passages of at least this many sentences (default: 3, so every PPT pair class fits)")
    parser.add_argument("--min-shared-words", type=int, default=6,
                        help="an evaluation sentence this long (words) or longer excludes a passage holding it (default: 6)")
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not (data / "boolq" / "train.jsonl").is_file():
        print(f"build_ppt_corpus: no boolq/train.jsonl under {data}; pass --data", file=sys.stderr)
        return 2
    docs, counts = build(data, args.min_sentences, args.min_shared_words)
    atomic_write_text(args.out, "\n\n".join(docs) + "\n")
    documents = read_corpus(args.out)
    counts["sentences"] = sum(len(d.sentences) for d in documents)
    counts["words"] = sum(len(s.split()) for d in documents for s in d.sentences)
    for key, value in counts.items():
        print(f"{key:52s} {value:>9,}")
    print(f"{'sha256':52s} {file_sha256(args.out)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
