import torch

from softprompt.interpret import label_words_kept, nearest_tokens
from softprompt.prompt import SoftPrompt


def test_embedding_rows_are_their_own_nearest_tokens(causal_backbone):
    bb = causal_backbone
    ids = torch.tensor(bb.tokenize("great awful movie"))
    rows = nearest_tokens(bb, bb.embed(ids), k=3, chunk=7)  # small chunks: the running top-k must merge right
    assert [r.ids[0] for r in rows] == ids.tolist()
    assert all(abs(r.similarities[0] - 1) < 1e-4 for r in rows)
    assert all(r.similarities == sorted(r.similarities, reverse=True) for r in rows)
    assert rows[0].tokens[0] == "great"


def test_class_label_init_keeps_label_words(causal_backbone):
    bb = causal_backbone
    words = [[" positive"], [" negative"]]
    p = SoftPrompt.initialize(4, bb.dim, "class-labels", bb.init_context(label_words=words))
    assert label_words_kept(bb, p.weight, words, k=1) == [True, True]


def test_inspect_cli(tiny_model_dirs, toy_data, tmp_path, capsys):
    from softprompt.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]), "--prompt-length", "3",
                 "--max-steps", "1", "--eval-every", "1", "--out", str(out), "--no-progress", "--test-split", "",
                 "--lr", "1e-6", "--optimizer", "adam"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out / "best"), "--k", "2"]) == 0
    text = capsys.readouterr().out
    assert "2/2" in text and "positive=True" in text
