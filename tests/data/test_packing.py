"""Packing: fixed-length rows, no tokens lost, positions restart per document, first-token labels masked."""

import pytest

from minimind_hf.data.packing import IGNORE_INDEX, pack_documents

EOS = 2


def test_rows_are_full_and_nothing_is_lost():
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34, 35, 36], [40]]
    rows = list(pack_documents(docs, seq_len=5, eos_token_id=EOS))
    assert all(len(r["input_ids"]) == len(r["position_ids"]) == len(r["labels"]) == 5 for r in rows)
    stream = [t for r in rows for t in r["input_ids"]]
    expected = [10, 11, 12, 2, 20, 21, 2, 30, 31, 32, 33, 34, 35, 36, 2, 40, 2]
    assert stream[: len(expected)] == expected
    # tail padded with eos, no loss on padding
    assert stream[len(expected) :] == [EOS] * (len(stream) - len(expected))
    assert rows[-1]["labels"][-(len(stream) - len(expected)) :] == [IGNORE_INDEX] * (
        len(stream) - len(expected)
    )


def test_positions_restart_and_first_token_unlabelled():
    rows = list(pack_documents([[10, 11, 12], [20, 21]], seq_len=7, eos_token_id=EOS))
    assert rows == [
        {
            "input_ids": [10, 11, 12, 2, 20, 21, 2],
            "position_ids": [0, 1, 2, 3, 0, 1, 2],
            "labels": [IGNORE_INDEX, 11, 12, 2, IGNORE_INDEX, 21, 2],
        }
    ]


def test_long_document_is_split_not_dropped():
    doc = list(range(100, 113))  # 13 tokens + eos = 14 -> rows of 6: 6, 6, 2 (+4 pad)
    rows = list(pack_documents([doc], seq_len=6, eos_token_id=EOS))
    assert [r["position_ids"] for r in rows][:2] == [[0, 1, 2, 3, 4, 5]] * 2
    kept = [t for r in rows for t in r["input_ids"]][:14]
    assert kept == doc + [EOS]


def test_drop_last_and_bad_length():
    assert len(list(pack_documents([[5, 6, 7]], seq_len=3, eos_token_id=EOS, drop_last=True))) == 1
    with pytest.raises(ValueError, match="seq_len"):
        list(pack_documents([[5]], seq_len=1, eos_token_id=EOS))
