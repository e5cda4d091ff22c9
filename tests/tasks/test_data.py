import json

import pytest

from softprompt.errors import ConfigError, DataError
from softprompt.tasks.data import read_examples, write_examples


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_field_map_numeric_labels_and_blank_lines(tmp_path):
    path = write(
        tmp_path / "a.jsonl",
        '{"sentence": "good", "sentiment": 1, "extra": "x"}\n\n'
        '{"sentence": "bad", "sentiment": 0, "extra": "y"}\n',
    )
    rows = read_examples(path, field_map={"text": "sentence", "label": "sentiment"})
    assert rows == [
        {"extra": "x", "text": "good", "label": "1", "idx": 0},
        {"extra": "y", "text": "bad", "label": "0", "idx": 1},
    ]


def test_jsonl_keeps_own_idx_and_converts_bool_label(tmp_path):
    path = write(tmp_path / "a.json", '{"text": "t", "label": true, "idx": 41}\n')
    assert read_examples(path) == [{"text": "t", "label": "true", "idx": 41}]


def test_csv_with_quoting_and_field_map(tmp_path):
    path = write(
        tmp_path / "a.csv",
        'review,stars\n"great, really ""great""",5\n"two\nlines",1\n',
    )
    rows = read_examples(path, field_map={"text": "review", "label": "stars"})
    assert rows == [
        {"text": 'great, really "great"', "label": "5", "idx": 0},
        {"text": "two\nlines", "label": "1", "idx": 1},
    ]


def test_tsv_and_explicit_format(tmp_path):
    text = "text\tlabel\nhello, world\tpositive\n"
    assert read_examples(write(tmp_path / "a.tsv", text)) == [
        {"text": "hello, world", "label": "positive", "idx": 0}
    ]
    assert read_examples(write(tmp_path / "a.txt", text), format="tsv")[0]["label"] == "positive"


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: invalid JSON \(Expecting property name enclosed in double "
                                       r"quotes at column 15, the end of the line\)"):
        read_examples(path)


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_a_json_error_names_its_line_and_the_column_within_it(tmp_path, end):
    """Line 3 holds a bad value in its middle (column 27: the n of nope) or is cut short (column 27,
    its end): the column counts within line 3, whatever ends the lines, never from line 4."""
    good = '{"text": "good", "label": "positive"}' + end + '{"text": "bad", "label": "negative"}' + end
    path = write(tmp_path / "mid.jsonl", good + '{"text": "oops", "label": nope, "x": 1}' + end + '{"text": "x"}' + end)
    with pytest.raises(DataError) as err:
        read_examples(path)
    assert str(err.value).startswith(f"{path}:3: invalid JSON (Expecting value at column 27); each line must be one JSON object")
    path = write(tmp_path / "cut.jsonl", good + '{"text": "oops", "label": ' + end + '{"text": "x"}' + end)
    with pytest.raises(DataError) as err:
        read_examples(path)
    assert str(err.value).startswith(f"{path}:3: invalid JSON (Expecting value at column 27, the end of the line);")


def test_json_value_that_is_not_an_object(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"text": "a"}\n["text", "b"]\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: expected a JSON object.*array"):
        read_examples(path)


def test_json_array_file_gets_a_hint(tmp_path):
    path = write(tmp_path / "arr.json", '[\n{"text": "a"}\n]\n')
    with pytest.raises(DataError, match="JSON Lines"):
        read_examples(path)


def test_csv_row_with_wrong_column_count_names_its_line(tmp_path):
    # the quoted field spans lines 2-3, so the bad row starts on line 4
    path = write(tmp_path / "bad.csv", 'text,label\n"multi\nline",pos\nno label here\n')
    with pytest.raises(DataError, match=r"bad\.csv:4: expected 2 columns \(text, label\), found 1"):
        read_examples(path)


def test_csv_needs_header_and_mapped_columns(tmp_path):
    with pytest.raises(DataError, match="header"):
        read_examples(write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataError, match="'sentence'.*--field-map"):
        read_examples(write(tmp_path / "a.csv", "text,label\nx,y\n"), field_map={"text": "sentence"})


def test_missing_mapped_key_in_jsonl_row(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"sentence": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: .*'sentence'"):
        read_examples(path, field_map={"text": "sentence"})


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nope\.jsonl; check the path$"):
        read_examples(tmp_path / "nope.jsonl")  # a file given by path: --data-dir would not help


def test_missing_relative_file_names_the_folder_it_was_looked_for_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"not found: nope\.jsonl \(relative to {tmp_path}\); check the path"):
        read_examples("nope.jsonl")


def test_unknown_suffix_names_formats_and_option(tmp_path):
    with pytest.raises(ConfigError, match=r"\.jsonl.*\.csv.*\.tsv.*format="):
        read_examples(write(tmp_path / "data.parquet", ""))
    with pytest.raises(ConfigError, match="unknown data format"):
        read_examples(tmp_path / "data.parquet", format="parquet")


def test_limit_reads_first_rows_only(tmp_path):
    # the malformed last line is never reached
    lines = [json.dumps({"text": f"t{i}", "label": "a"}) for i in range(5)] + ["{broken"]
    path = write(tmp_path / "a.jsonl", "\n".join(lines) + "\n")
    assert [r["text"] for r in read_examples(path, limit=3)] == ["t0", "t1", "t2"]
    assert read_examples(path, limit=0) == []
    with pytest.raises(ConfigError):
        read_examples(path, limit=-1)


def test_write_examples_round_trip(tmp_path):
    rows = [{"text": "café ✓", "label": "positive", "idx": 0}, {"text": "b", "label": "negative", "idx": 1}]
    path = tmp_path / "out" / "rows.jsonl"
    write_examples(path, rows)
    assert read_examples(path) == rows
    assert "café" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]
    with pytest.raises(DataError, match="row 0"):
        write_examples(path, [{"x": object()}])
    assert read_examples(path) == rows  # the failed write left the old file intact
