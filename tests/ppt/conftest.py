"""A small generated corpus in the tiny tokenizer's words (tests/conftest.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import WORDS
from softprompt.ppt.corpus import Document


def corpus_texts(n_docs: int = 12, seed: int = 0) -> list[str]:
    """``n_docs`` documents of 2 to 6 distinct sentences of tiny-vocabulary words."""
    rng = random.Random(seed)
    docs = []
    for k in range(n_docs):
        sentences = []
        for i in range(rng.randint(2, 6)):
            words = rng.sample(WORDS, rng.randint(4, 8))
            sentences.append(" ".join([words[0].capitalize(), *words[1:]]) + f" {k} {i}.")
        docs.append(" ".join(sentences))
    return docs


def make_documents(n_docs: int = 12, seed: int = 0) -> list[Document]:
    """The documents :func:`corpus_texts` writes, as :func:`read_corpus` would return them."""
    from softprompt.ppt.corpus import split_sentences

    return [Document(k, 1 + 2 * k, tuple(split_sentences(t))) for k, t in enumerate(corpus_texts(n_docs, seed))]


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    """A plain-text corpus: 12 documents separated by blank lines."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(corpus_texts()) + "\n", encoding="utf-8")
    return path
