"""The data side: every subject's official CSVs parse, text is kept exact, the location is a setting,
and bad data is reported with the file (and line) to fix."""

from __future__ import annotations

import csv
import shutil

import pytest
from minimind_hf.eval import data
from minimind_hf.eval.subjects import BENCHMARKS, CEVAL, CMMLU

ROW_COUNTS = {"ceval": {"val": 1346, "dev": 52 * 5}, "cmmlu": {"test": 11582, "dev": 67 * 5}}


@pytest.mark.parametrize("benchmark", ["ceval", "cmmlu"])
def test_every_subject_parses(shared_data, benchmark):
    bench = BENCHMARKS[benchmark]
    assert data.check_data_dir(shared_data, {benchmark: [s.name for s in bench.subjects]}) == shared_data
    utils = data.task_utils()
    columns = utils.REQUIRED_COLUMNS[benchmark]
    totals = dict.fromkeys(ROW_COUNTS[benchmark], 0)
    for subject in bench.subjects:
        for split in totals:
            rows = utils.read_csv(utils.csv_path(shared_data, benchmark, subject.name, split), benchmark)
            assert all(set(columns) <= set(row) for row in rows)
            assert all(row[columns[-1]] in "ABCD" and row[columns[0]].strip() for row in rows)
            if split == "dev":
                assert len(rows) == 5, subject.name
            totals[split] += len(rows)
    assert totals == ROW_COUNTS[benchmark]


def test_load_subject_gives_the_splits_lm_eval_expects(shared_data):
    ceval = data.load_subject("ceval", "accountant", shared_data)
    assert set(ceval) == {"val", "dev"} and len(ceval["dev"]) == 5 and len(ceval["val"]) == 49
    assert ceval["dev"].column_names == ["id", "question", "A", "B", "C", "D", "answer", "explanation"]
    cmmlu = data.load_subject("cmmlu", "agronomy", shared_data)
    assert set(cmmlu) == {"test", "dev"}
    assert cmmlu["test"].column_names == [
        "Question",
        "A",
        "B",
        "C",
        "D",
        "Answer",
    ]  # unnamed index column dropped


def test_cells_are_read_as_exact_text(shared_data):
    """No type guessing: binary-looking options keep their leading zeros, decimals their trailing ones."""
    path = shared_data / "cmmlu" / "test" / "computer_science.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        raw = list(csv.DictReader(fh))
    ours = data.load_subject("cmmlu", "computer_science", shared_data)["test"]
    assert [r["B"] for r in raw] == ours["B"]
    assert "00001100" in ours["B"]
    cas = data.load_subject("cmmlu", "college_actuarial_science", shared_data)["test"]
    assert cas[0]["B"] == "0.80"


def test_data_location_resolution(tmp_path, monkeypatch):
    utils = data.task_utils()
    assert utils.resolve_data_dir(None) is None  # default: the Hub
    assert utils.resolve_data_dir("hub") is None
    monkeypatch.setenv("MINIMIND_EVAL_DATA", str(tmp_path))
    assert utils.resolve_data_dir(None) == tmp_path
    assert utils.resolve_data_dir("hub") is None  # an explicit choice beats the environment
    monkeypatch.setenv("MINIMIND_EVAL_DATA", str(tmp_path / "nope"))
    with pytest.raises(data.EvalDataError, match=r"\$MINIMIND_EVAL_DATA=.*nope: not a folder"):
        utils.resolve_data_dir(None)


def test_clear_errors_for_a_bad_data_dir(tmp_path, shared_data):
    with pytest.raises(data.EvalDataError, match="no ceval/ folder"):
        data.check_data_dir(tmp_path)
    (tmp_path / "ceval" / "val").mkdir(parents=True)
    with pytest.raises(data.EvalDataError, match=r"no dev/ folder"):
        data.check_data_dir(tmp_path, {"ceval": ["law"]})
    (tmp_path / "ceval" / "dev").mkdir()
    shutil.copy(shared_data / "ceval" / "val" / "law_val.csv", tmp_path / "ceval" / "val")
    with pytest.raises(
        data.EvalDataError, match=r"law_dev\.csv: file not found \(C-Eval subject 'law', split dev\)"
    ):
        data.check_data_dir(tmp_path, {"ceval": ["law"]})
    with pytest.raises(data.EvalDataError, match=r"logic_val\.csv: file not found"):
        data.load_subject("ceval", "logic", tmp_path)


def test_malformed_csvs_name_file_line_and_field(tmp_path):
    utils = data.task_utils()
    bad_answer = tmp_path / "bad.csv"
    bad_answer.write_text("id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(data.EvalDataError, match=r"bad\.csv:3: answer='E', expected one of A, B, C, D"):
        utils.read_csv(bad_answer, "ceval")
    no_column = tmp_path / "cols.csv"
    no_column.write_text(",Question,A,B,C,Answer\n0,q,a,b,c,A\n", encoding="utf-8")
    with pytest.raises(data.EvalDataError, match=r"cols\.csv: header .* lacks column\(s\) D"):
        utils.read_csv(no_column, "cmmlu")
    short = tmp_path / "short.csv"
    short.write_text(",Question,A,B,C,D,Answer\n0,q,a,b,c,A\n", encoding="utf-8")
    with pytest.raises(data.EvalDataError, match=r"short\.csv:2: 6 fields, expected 7"):
        utils.read_csv(short, "cmmlu")


def test_subject_tables_name_their_split_files():
    utils = data.task_utils()
    assert utils.SPLITS == {b.name: (b.eval_split, b.fewshot_split) for b in (CEVAL, CMMLU)}
    with pytest.raises(KeyError, match="no subject 'lawyer'.*legal_professional"):
        CEVAL.subject("lawyer")


def test_an_unclosed_quote_is_reported_where_the_row_starts(tmp_path):
    """issue 14: a quote left open swallowed the rest of the file and was reported at the last line."""
    from minimind_hf.eval.data import task_utils

    rows = ["id,question,A,B,C,D,answer"] + [f"{i},q{i},a,b,c,d,A" for i in range(40)]
    rows[6] = '5,"q5 never closed,a,b,c,d,A'
    path = tmp_path / "law_val.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(
        task_utils().EvalDataError,
        match=r"law_val.csv:7 \(this row runs on to line 41: an unclosed quote\?\)",
    ):
        task_utils().read_csv(path, "ceval")
