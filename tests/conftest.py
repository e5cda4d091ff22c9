"""Tiny randomly initialised models of each family, built from configs (no weights exist here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SOFTPROMPT_SHARED_DATA", REPO.parent / "shared" / "data"))

WORDS = (
    "a an the this that is was it movie film story plot acting great good bad terrible awful fun dull "
    "boring witty gorgeous seductive review sentiment positive negative neutral yes no true false neither "
    "question answer premise hypothesis passage not very really so and or but of to in with for on "
    "i you he she we they what why how who when where which did does do have has had be been are were "
    "love hate like best worst ever never always one two three time people make made see seen watch "
    "funny sad long short beautiful ugly slow fast smart stupid classify text label entailment"
).split()


def make_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over :data:`WORDS` with the special tokens of ``family``."""
    specials = {
        "causal": ["<pad>", "<unk>", "<bos>", "<eos>"],
        "causal-bos": ["<pad>", "<unk>", "<bos>", "<eos>"],
        "seq2seq": ["<pad>", "<unk>", "</s>"],
        "masked": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    }[family]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)) + list("?.,:!'\"-()"))}
    tok = Tokenizer(WordLevel(vocab, unk_token=specials[1]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    kwargs = {"pad_token": specials[0], "unk_token": specials[1]}
    if family == "causal":
        kwargs.update(bos_token="<bos>", eos_token="<eos>")
    elif family == "causal-bos":
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
        kwargs.update(bos_token="<bos>", eos_token="<eos>")
    elif family == "seq2seq":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
        kwargs.update(eos_token="</s>")
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        kwargs.update(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=256, **kwargs)


def make_model(family: str, tokenizer, seed: int = 0):
    """A tiny randomly initialised model of ``family`` sized to ``tokenizer``."""
    from transformers import (BertConfig, BertForMaskedLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig,
                              LlamaForCausalLM, T5Config, T5ForConditionalGeneration)

    torch.manual_seed(seed)
    v = len(tokenizer)
    if family in ("causal", "causal-bos"):
        cfg = LlamaConfig(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
                          initializer_range=0.2)
        model = LlamaForCausalLM(cfg)
    elif family == "gemma":
        cfg = Gemma3TextConfig(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=8, max_position_embeddings=256, sliding_window=64,
                               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id)
        model = Gemma3ForCausalLM(cfg)
    elif family == "seq2seq":
        cfg = T5Config(vocab_size=v, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
        model = T5ForConditionalGeneration(cfg)
    elif family == "masked":
        cfg = BertConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id)
        model = BertForMaskedLM(cfg)
    else:
        raise ValueError(family)
    return model.eval()


def make_backbone(family: str, seed: int = 0, **kwargs):
    from softprompt.backbones import wrap

    tok = make_tokenizer("causal" if family == "gemma" else family)
    return wrap(make_model(family, tok, seed), tok, model_id=f"tiny-{family}", **kwargs)


@pytest.fixture(params=["causal", "causal-bos", "seq2seq", "masked"])
def any_backbone(request):
    return make_backbone(request.param)


@pytest.fixture
def causal_backbone():
    return make_backbone("causal")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "rotten_tomatoes").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


TOY_POS = ["great fun", "a witty and beautiful film", "i love this movie", "best story ever", "smart and funny",
           "really good acting", "gorgeous and seductive", "so much fun"]
TOY_NEG = ["awful", "a dull and boring plot", "i hate this film", "worst movie ever", "stupid and slow",
           "really bad acting", "ugly and long", "terrible story"]


def write_toy_data(folder: Path, name: str = "toy") -> Path:
    """A tiny sentiment task in ``folder/name/{train,validation,test}.jsonl`` (rotten_tomatoes fields)."""
    import json

    d = folder / name
    d.mkdir(parents=True, exist_ok=True)
    rows = [{"text": t, "label": "positive"} for t in TOY_POS] + [{"text": t, "label": "negative"} for t in TOY_NEG]
    for split in ("train", "validation", "test"):
        with open(d / f"{split}.jsonl", "w") as fh:
            for i, r in enumerate(rows):
                fh.write(json.dumps({**r, "idx": i}) + "\n")
    return folder


QUESTIONS = [("the movie was great fun", "was it good", "yes"), ("the film was awful", "was it good", "no"),
             ("i love this story", "did she like it", "yes"), ("i hate this plot", "did he like it", "no"),
             ("the acting was really bad", "was the acting good", "no"), ("smart and funny", "was it funny", "yes"),
             ("a dull and boring film", "was it fun", "no"), ("best movie ever", "was it the best", "yes"),
             ("ugly and slow", "was it beautiful", "no"), ("a witty story", "was it witty", "yes"),
             ("terrible acting", "was the acting great", "no"), ("so much fun", "was it fun", "yes")]


def write_boolq(folder: Path) -> Path:
    """A tiny BoolQ in ``folder/boolq/{train,validation,test}.jsonl`` (passage, question, label)."""
    import json

    d = folder / "boolq"
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        with open(d / f"{split}.jsonl", "w") as fh:
            for i, (passage, question, label) in enumerate(QUESTIONS):
                fh.write(json.dumps({"passage": passage, "question": question, "label": label, "idx": i}) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny models (with tokenizers) per family, loadable with ``--model DIR``."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for family in ("causal", "seq2seq", "masked"):
        tok = make_tokenizer(family)
        model = make_model(family, tok)
        d = root / family
        model.save_pretrained(d)
        tok.save_pretrained(d)
        out[family] = d
    return out


@pytest.fixture
def loading_bars_shown():
    """transformers' progress bars switched on for the test, and back as they were after (the
    experiment runner switches them off for the rest of its process)."""
    from transformers.utils import logging as hf_logging

    was_shown = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    if not was_shown:
        hf_logging.disable_progress_bar()


@pytest.fixture
def toy_data(tmp_path) -> Path:
    """A data dir holding ``rotten_tomatoes/{train,validation,test}.jsonl`` of toy rows."""
    return write_toy_data(tmp_path / "data", "rotten_tomatoes")


def hold_out_lock(out: Path):
    """Start a process that holds ``out``'s run lock, as a running ``train --out`` does; returns the
    ``Popen`` once the lock is held (kill it with SIGKILL to drop the lock)."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom softprompt.outdir import out_lock\n"
                               f"with out_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert holder.stdout.readline().strip() == "held"
    return holder


def fit_batch(method, backbone, task, batch, steps: int = 15, lr: float = 1e-2) -> tuple[float, float]:
    """Train ``method`` on one fixed ``batch`` with Adam for ``steps`` steps: ``(first loss, last loss)``."""
    opt = torch.optim.Adam(method.trainable_parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = method(backbone, task, batch)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    return losses[0], losses[-1]


def crash_at_call(monkeypatch, method_cls, n: int = 5):
    """Make ``method_cls.forward`` raise KeyboardInterrupt at its ``n``-th call (a run killed
    mid-training); returns a function that puts the real forward back."""
    real_forward = method_cls.forward
    calls = {"n": 0}

    def crashing_forward(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real_forward(self, *a, **k)

    monkeypatch.setattr(method_cls, "forward", crashing_forward)
    return lambda: monkeypatch.setattr(method_cls, "forward", real_forward)
