"""Readers keep the data as written: TSV quotes are text, merged or dropped lines are reported,
and line ends do not change what is read."""

import io
import logging

import pytest

from softprompt.errors import DataError
from softprompt.tasks.data import read_examples, read_lines


def write(path, text: str):
    path.write_bytes(text.encode("utf-8"))  # bytes: the line ends stay exactly as given
    return path


def test_tsv_field_starting_with_a_quote_keeps_its_quotes(tmp_path):
    path = write(tmp_path / "a.tsv", 'text\tlabel\n"great" fun, really\tpositive\nsays "no"\tnegative\n')
    assert [r["text"] for r in read_examples(path)] == ['"great" fun, really', 'says "no"']


def test_tsv_unmatched_quote_does_not_swallow_the_next_lines(tmp_path):
    path = write(tmp_path / "a.tsv", 'text\tlabel\n"unclosed quote\tpositive\nnext line\tnegative\nlast\tpositive\n')
    rows = read_examples(path)
    assert [(r["text"], r["label"]) for r in rows] == [
        ('"unclosed quote', "positive"), ("next line", "negative"), ("last", "positive")]


def test_csv_quote_never_closed_is_an_error_naming_its_line(tmp_path):
    path = write(tmp_path / "a.csv", 'text,label\nfine,positive\n"unclosed,positive\nnext,negative\nlast,positive\n')
    with pytest.raises(DataError, match=r"a\.csv:3: a quote opened on this line is never closed, so lines 3-5"):
        read_examples(path)


def test_csv_rows_spanning_lines_are_reported_with_file_and_lines(tmp_path, caplog):
    path = write(tmp_path / "a.csv", 'text,label\n"two\nlines",positive\nplain,negative\n"three\n\nlines",negative\n')
    with caplog.at_level(logging.WARNING, logger="softprompt.tasks.data"):
        rows = read_examples(path)
    assert [r["text"] for r in rows] == ["two\nlines", "plain", "three\n\nlines"]
    assert f"{path}: lines 2-3, 5-7 were each read as one row" in caplog.text


def test_csv_wrong_column_count_after_a_merge_points_at_the_quote(tmp_path):
    path = write(tmp_path / "a.csv", 'text,label\n"oops,positive\nmore,negative\n",x,y\n')
    with pytest.raises(DataError, match=r"a\.csv:2: expected 2 columns .* found 3; .*lines 2-4 were read as one row"):
        read_examples(path)


def test_rows_of_empty_cells_are_dropped_with_a_warning(tmp_path, caplog):
    path = write(tmp_path / "a.tsv", "text\tlabel\nkept\tpositive\n\t\n\nalso\tnegative\n \t \n")
    with caplog.at_level(logging.WARNING, logger="softprompt.tasks.data"):
        rows = read_examples(path)
    assert [r["text"] for r in rows] == ["kept", "also"]
    assert f"{path}: skipped 2 row(s) with every cell empty, at line(s) 3, 6" in caplog.text


@pytest.mark.parametrize("suffix,body", [
    (".csv", 'text,label\n"multi\nline",positive\nplain,negative\n'),
    (".tsv", 'text\tlabel\n"quoted"\tpositive\nplain\tnegative\n'),
    (".jsonl", '{"text": "a\\nb", "label": "positive"}\n\n{"text": "plain", "label": "negative"}\n'),
])
def test_files_read_the_same_whatever_the_line_ends(tmp_path, suffix, body):
    read = {}
    for name, end in (("unix", "\n"), ("windows", "\r\n"), ("old-mac", "\r")):
        read[name] = read_examples(write(tmp_path / f"{name}{suffix}", body.replace("\n", end)))
    assert read["unix"] == read["windows"] == read["old-mac"]
    assert len(read["unix"]) == 2 and "\r" not in str(read["unix"])


def test_stdin_lines_read_the_same_whatever_the_line_ends(caplog):
    want = ["great fun", 'a "quoted" one', "awful"]
    for end in ("\n", "\r\n", "\r"):
        text = "\ufeff" + end.join(want) + end
        assert read_lines(io.StringIO(text, newline="")) == want
    with caplog.at_level(logging.WARNING, logger="softprompt.tasks.data"):
        assert read_lines(io.StringIO("one\r\n\r\n  \r\ntwo", newline="")) == ["one", "two"]
    assert "<stdin>: skipped 2 blank line(s) at line(s) 2, 3" in caplog.text


def test_predict_reads_stdin_the_same_whatever_the_line_ends(tiny_model_dirs, monkeypatch, capsys):
    import json
    import sys

    from softprompt.cli import main

    argv = ["predict", "--model", str(tiny_model_dirs["causal"]), "--template", "Review: {text}\\nSentiment:",
            "--label-words", "positive=great;negative=terrible", "--json", "-"]
    for end in ("\n", "\r\n", "\r"):
        monkeypatch.setattr(sys, "stdin", io.StringIO(f"great fun{end}a 'quoted' one{end}", newline=""))
        assert main(argv) == 0
        lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
        assert [ln["input"] for ln in lines] == ["great fun", "a 'quoted' one"]
