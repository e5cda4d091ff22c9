import json

import pytest

from softprompt.errors import DataError
from softprompt.ppt.corpus import file_sha256, read_corpus, split_sentences


@pytest.mark.parametrize("text, expected", [
    ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
    ("Dr. Smith met Mrs. Jones at 5 p.m. on Monday. They left.",
     ["Dr. Smith met Mrs. Jones at 5 p.m. on Monday.", "They left."]),
    ("J. R. R. Tolkien wrote it. The U.S. Army read it.", ["J. R. R. Tolkien wrote it.", "The U.S. Army read it."]),
    ("See No. 5 and Fig. 2 here. The answer was no. It ended.",
     ["See No. 5 and Fig. 2 here.", "The answer was no.", "It ended."]),
    ('He said "stop." Then (quietly) it grew 3.5 percent. "Why?" she asked.',
     ['He said "stop."', "Then (quietly) it grew 3.5 percent.", '"Why?" she asked.']),
    ("it rose, e.g. in march. lower case does not start a sentence.", ["it rose, e.g. in march. lower case does not start a sentence."]),
    ("Lines\nare   joined.\n\nHere 1990. 1991 came.", ["Lines are joined.", "Here 1990.", "1991 came."]),
    ("Led by Maj. Gen. Lee. ``Mr. Ed'' aired. Reynolds v. Sims was decided.",
     ["Led by Maj. Gen. Lee.", "``Mr. Ed'' aired.", "Reynolds v. Sims was decided."]),
    ("   ", []),
])
def test_the_sentence_splitter_rule(text, expected):
    assert split_sentences(text) == expected


def test_a_text_corpus_is_blank_line_separated_documents_with_their_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("First doc. Its second\nsentence.\n\n\n  \nSecond doc here.\n\nThird. Doc.", encoding="utf-8")
    docs = read_corpus(path)
    assert [d.sentences for d in docs] == [("First doc.", "Its second sentence."), ("Second doc here.",),
                                           ("Third.", "Doc.")]
    assert [d.line for d in docs] == [1, 6, 8] and [d.index for d in docs] == [0, 1, 2]
    assert len(file_sha256(path)) == 64


def test_a_jsonl_corpus_reads_the_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "A b. C d.", "id": 1}) + "\n\n" + json.dumps({"text": "  "}) + "\n"
                    + json.dumps({"text": "E."}) + "\n", encoding="utf-8")
    docs = read_corpus(path)
    assert [d.sentences for d in docs] == [("A b.", "C d."), ("E.",)] and [d.line for d in docs] == [1, 4]


def test_corpus_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match="corpus file not found"):
        read_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n  \n\n")
    with pytest.raises(DataError, match="empty.txt: the corpus holds no documents"):
        read_corpus(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "Fine."}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON \(Expecting value at column 10\)"):
        read_corpus(tmp_path / "bad.jsonl")
    (tmp_path / "cut.jsonl").write_text('{"text": "Fine."}\n{"text": \n{"text": "More."}\n')
    with pytest.raises(DataError, match=r"cut.jsonl:2: invalid JSON \(Expecting value at column 10, the end of the line\)"):
        read_corpus(tmp_path / "cut.jsonl")
    (tmp_path / "nokey.jsonl").write_text('{"text": "Fine."}\n\n{"body": "x"}\n')
    with pytest.raises(DataError, match=r"nokey.jsonl:3: expected an object with a \"text\" string, found keys \['body'\]"):
        read_corpus(tmp_path / "nokey.jsonl")
    (tmp_path / "latin1.txt").write_bytes("Fine.\n\nCaf\xe9.\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt:3: not UTF-8"):
        read_corpus(tmp_path / "latin1.txt")
