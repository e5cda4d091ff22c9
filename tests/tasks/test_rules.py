"""PTR's rule files and rule verbalizer on the tiny models (issue 17, items 2-4)."""

import pytest
import torch

from softprompt.encoding import encode
from softprompt.errors import ConfigError, DataError
from softprompt.scoring import classification_loss, label_scores
from softprompt.tasks.rules import RuleVerbalizer, check_rules_cover, parse_rules, read_rules
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template

from conftest import make_backbone

TSV = "relation\thead\tlink\ttail\nLove(e1,e2)\tpeople\tlove\ttime\nLove(e2,e1)\ttime\tlove\tpeople\n" \
      "Hate(e1,e2)\tpeople\thate\ttime\nOther\tone\tnot very\ttwo\n"
TEMPLATE = "{text} . the {mask:head} {e1} {mask:link} the {mask:tail} {e2} ."
ROWS = [{"text": "i love this movie", "e1": "i", "e2": "movie", "label": "Love(e1,e2)"},
        {"text": "they hate the long film", "e1": "they", "e2": "film", "label": "Other"},
        {"text": "so much fun", "e1": "fun", "e2": "so", "label": "Hate(e1,e2)"}]


def rule_task():
    slots, rules = parse_rules(TSV)
    return Task(name="rel", template=Template(TEMPLATE), verbalizer=RuleVerbalizer(rules, slots),
                metrics=("semeval_f1", "accuracy"))


def test_tsv_and_yaml_rules_parse_alike(tmp_path):
    slots, rules = parse_rules(TSV)
    assert slots == ("head", "link", "tail") and rules["Other"] == ["one", "not very", "two"]
    (tmp_path / "r.yaml").write_text("slots: [head, link, tail]\nrules:\n" +
                                     "".join(f"  {k}: [{', '.join(v)}]\n" for k, v in rules.items()))
    assert read_rules(str(tmp_path / "r.yaml")) == (slots, rules)
    v = RuleVerbalizer(rules, slots)
    assert v.slot_candidates("link") == ["love", "hate", "not very"]  # rules sharing "love" share the candidate
    assert v.slot_candidates("head") == ["people", "time", "one"]
    assert v.slot_words("Love(e2,e1)") == {"head": "time", "link": "love", "tail": "people"}
    assert v.slot_words("Other") == {"head": "one", "link": "not very", "tail": "two"}


def test_rule_errors_name_the_problem():
    with pytest.raises(ConfigError, match="line 2 .*2 tab-separated cells"):
        parse_rules("relation\thead\tlink\nLove\tpeople\n")
    with pytest.raises(ConfigError, match="'A' and 'B' have the same words"):
        RuleVerbalizer({"A": ["x", "y"], "B": ["x", "y"]}, ["head", "tail"])
    v = rule_task().verbalizer
    with pytest.raises(DataError, match="'Cause-Effect\\(e1,e2\\)' with no rule.*add a line"):
        check_rules_cover(v, ["Love(e1,e2)", "Cause-Effect(e1,e2)"])
    with pytest.raises(DataError, match="rules for 'Love\\(e2,e1\\)', 'Hate\\(e1,e2\\)', 'Other'.*never holds"):
        check_rules_cover(v, ["Love(e1,e2)"])
    with pytest.raises(ConfigError, match="no rule file 'nope.tsv'"):
        read_rules("nope.tsv")


def test_bundled_semeval_rules_tell_the_19_labels_apart():
    slots, rules = read_rules("semeval")
    assert slots == ("head", "link", "tail") and len(rules) == 19
    RuleVerbalizer(rules, slots)  # refuses two labels with the same words


def test_masked_class_score_is_the_sum_of_its_slot_scores_and_the_loss_is_by_hand():
    bb = make_backbone("masked")
    task = rule_task()
    v = task.verbalizer
    rows = [ROWS[0], ROWS[2]]  # gold words are single tokens
    batch = encode(bb, task, rows)
    with torch.no_grad():
        class_scores, parts, slot_scores = v.rule_scores(bb, batch, None)
        assert torch.allclose(class_scores, parts.sum(-1))
        assert torch.allclose(label_scores(bb, task, batch), class_scores)
        loss = classification_loss(bb, task, batch)
    # by hand: the model on [CLS] text . the [MASK] e1 [MASK] the [MASK] e2 . [SEP], one mask per token
    m = bb.mask_token_id
    cls_id, sep_id = bb.tokenizer.cls_token_id, bb.tokenizer.sep_token_id
    hand_loss = 0.0
    for b, row in enumerate(rows):
        per_slot = {}
        for k, slot in enumerate(v.slots):
            scores = []
            for w in v.slot_candidates(slot):
                n = len(bb.tokenize(w))
                widths = [1, 1, 1]
                widths[k] = n
                texts = [f"{row['text']} . the", row["e1"], "the", f"{row['e2']} ."]
                seq, starts = [cls_id], []
                for j in range(3):
                    seq += bb.tokenize(texts[j])
                    starts.append(len(seq))
                    seq += [m] * widths[j]
                seq += bb.tokenize(texts[3]) + [sep_id]
                with torch.no_grad():
                    lp = torch.log_softmax(bb.model(input_ids=torch.tensor([seq])).logits[0], -1)
                start = starts[k]
                scores.append(float(sum(lp[start + j, t] for j, t in enumerate(bb.tokenize(w)))))
            per_slot[slot] = torch.tensor(scores)
            assert slot_scores[slot][b].tolist() == pytest.approx(scores, abs=1e-4)
        gold = v.labels.index(row["label"])
        cls = torch.tensor([sum(float(per_slot[s][v.slot_candidates(s).index(v.rules[c][k])])
                                for k, s in enumerate(v.slots)) for c in v.labels])
        assert parts[b].sum(-1).tolist() == pytest.approx(cls.tolist(), abs=1e-4)
        ce = -torch.log_softmax(cls, -1)[gold]
        slot_ce = sum(-torch.log_softmax(per_slot[s], -1)[v.slot_candidates(s).index(v.rules[row["label"]][k])]
                      for k, s in enumerate(v.slots)) / len(v.slots)
        hand_loss += float(ce + slot_ce) / len(rows)
    assert float(loss) == pytest.approx(hand_loss, abs=1e-4)


def causal_logprob(bb, ids, scored_from):
    """log p(ids[scored_from:] | ids[:scored_from]) after the lead tokens, by the model's own forward."""
    seq = bb.lead_ids + ids
    with torch.no_grad():
        lp = torch.log_softmax(bb.model(input_ids=torch.tensor([seq])).logits[0].float(), -1)
    start = len(bb.lead_ids) + scored_from
    return float(sum(lp[i - 1, seq[i]] for i in range(start, len(seq))))


@pytest.mark.parametrize("family", ["causal", "causal-bos"])
def test_causal_class_score_reads_each_class_own_words_and_training_reads_gold_words(family):
    bb = make_backbone(family)
    task = rule_task()
    v = task.verbalizer
    batch = encode(bb, task, ROWS[:2])
    with torch.no_grad():
        class_scores, parts, _ = v.rule_scores(bb, batch, None)
        fast = label_scores(bb, task, batch)  # every class as one continuation of the sentence
    assert torch.allclose(class_scores, parts.sum(-1)) and torch.allclose(fast, class_scores, atol=1e-5)
    tok = bb.tokenize
    for b, row in enumerate(ROWS[:2]):
        before = tok(f"{row['text']} . the")
        for c, label in enumerate(v.labels):
            h, lnk, t = (tok(w) for w in v.rules[label])
            full = before + h + tok(row["e1"]) + lnk + tok("the") + t + tok(f"{row['e2']} .")
            # the class's own words fill its earlier slots: its score is the whole text after "the", teacher-forced
            assert float(class_scores[b, c]) == pytest.approx(causal_logprob(bb, full, len(before)), abs=1e-4)
    # training: slot k follows the gold words of the slots before it
    with torch.no_grad():
        _, gold_parts, slot_scores = v.rule_scores(bb, batch, None, teacher_gold=True)
    row, gold = ROWS[1], v.rules[ROWS[1]["label"]]
    before = tok(f"{row['text']} . the") + tok(gold[0]) + tok(row["e1"])
    for i, w in enumerate(v.slot_candidates("link")):
        ids = before + tok(w) + tok("the")
        assert float(slot_scores["link"][1, i]) == pytest.approx(causal_logprob(bb, ids, len(before)), abs=1e-4)
    assert torch.allclose(gold_parts[:, :, 0], parts[:, :, 0])  # the first slot has nothing before it


def test_causal_training_reads_each_row_once_and_scores_as_slot_by_slot():
    """Training scores every slot in one call: the model reads each row's text once, up to its last
    slot with the gold words in (the row cut at an earlier slot is a prefix of it), then one packed
    sequence of every slot's candidates per row; the scores are the slot-by-slot ones."""
    bb = make_backbone("causal")
    task = rule_task()
    v = task.verbalizer
    batch = encode(bb, task, ROWS)
    calls = []
    bb.model.base_model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    with torch.no_grad():
        _, _, slot_scores = v.rule_scores(bb, batch, None, teacher_gold=True)
        read = list(calls)
        ids = lambda w: bb.tokenize(v.prefix + w)  # noqa: E731
        gold = [v.rules[v.labels[g]] for g in batch.gold]
        for k, slot in enumerate(v.slots):
            cands = v.slot_candidates(slot)
            fills = {s: [ids(words[j]) for words in gold] for j, s in enumerate(v.slots[:k])}
            ref = bb.slot_word_scores(None, batch, slot, [[ids(w) for w in cands]] * len(batch), fills or None)
            assert torch.allclose(slot_scores[slot], ref[:, :len(cands)], atol=1e-5)
    texts, packed = [], []
    for b, ctx in enumerate(batch.context):
        pos = list(batch.answer_pos[b]) + [len(ctx)]
        between = [pos[k + 1] - pos[k] for k in range(len(v.slots))]  # the text after each slot, to the next
        texts.append(pos[-2] + sum(len(ids(gold[b][k])) for k in range(len(v.slots) - 1)))
        packed.append(sum(len(ids(w)) + between[k] - 1 for k, s in enumerate(v.slots) for w in v.slot_candidates(s)))
    assert read == [(len(ROWS), max(texts)), (len(ROWS), max(packed))]


def test_prompt_tuning_and_full_tuning_train_with_the_rules():
    from softprompt.methods import get_method

    bb = make_backbone("causal")
    task = rule_task()
    for name, options in (("prompt-tuning", {"prompt_length": 2}), ("full-tuning", {})):
        config_cls, method_cls = get_method(name)
        method = method_cls(config_cls(**options), bb, task)
        batch = encode(bb, task, ROWS, prompt_length=method.prompt_length)
        loss = method(bb, task, batch)
        loss.backward()
        assert torch.isfinite(loss) and any(p.grad is not None for p in method.trainable_parameters())
        bb.model.zero_grad(set_to_none=True)


def test_a_row_whose_relation_has_no_rule_is_refused_by_name():
    task = rule_task()
    with pytest.raises(DataError, match="relation 'Cause-Effect\\(e1,e2\\)' \\(row idx=7\\) has no rule.*add a line"):
        task.validate([{"text": "i love it", "e1": "i", "e2": "it", "label": "Cause-Effect(e1,e2)", "idx": 7}])


def test_training_refuses_rules_for_relations_the_data_never_has(tiny_model_dirs, tmp_path):
    import json

    from softprompt.training import train

    (tmp_path / "rules.tsv").write_text(TSV)
    rows = [r for r in ROWS if r["label"] != "Other"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="rules for 'Love\\(e2,e1\\)', 'Other', which the training rows never holds"):
        train(model=str(tiny_model_dirs["causal"]), task="rel", train_file=str(tmp_path / "train.jsonl"),
              validation_file=str(tmp_path / "train.jsonl"), template=TEMPLATE,
              label_words=f"rules:{tmp_path / 'rules.tsv'}", max_steps=1, out=str(tmp_path / "o"),
              progress=False, zero_shot_baseline=False, test_split="")


def test_encoder_decoder_trains_and_scores_through_the_same_calls():
    bb = make_backbone("seq2seq")
    task = rule_task()
    batch = encode(bb, task, ROWS)
    loss = classification_loss(bb, task, batch)
    with torch.no_grad():
        scores = label_scores(bb, task, batch)
        class_scores, parts, _ = task.verbalizer.rule_scores(bb, batch)
    assert torch.isfinite(loss) and scores.shape == (3, 4) and torch.isfinite(scores).all()
    assert torch.allclose(class_scores, parts.sum(-1)) and torch.allclose(scores, class_scores, atol=1e-5)
