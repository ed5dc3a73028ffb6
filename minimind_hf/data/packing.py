"""Pack tokenised documents into fixed-length rows with no padding, keeping document boundaries.

Each row is `seq_len` tokens cut from the concatenation of documents (each ending in eos). Position ids
restart at 0 at every document start, which is what tells transformers' mask builder (no attention_mask
given) to make a block-diagonal causal mask, and what flash/varlen kernels turn into `cu_seqlens`: a token
never attends across a document boundary. A long document is split over rows, not thrown away; its
continuation restarts positions at 0 (it sees only its own row).

Labels equal input ids except at each document's first token: with block-diagonal attention, predicting it
would mean predicting a new document from the end of the previous one, which is noise.
"""

from collections.abc import Iterable, Iterator

from .collate import IGNORE_INDEX


def pack_documents(
    docs: Iterable[list[int]], seq_len: int, eos_token_id: int, drop_last: bool = False
) -> Iterator[dict]:
    """Yield rows `{"input_ids", "position_ids", "labels"}` of exactly `seq_len` tokens.

    The last, partial row is padded with eos (label -100, positions continuing) unless `drop_last`.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    ids: list[int] = []
    pos: list[int] = []
    labels: list[int] = []
    for doc in docs:
        doc = list(doc) + [eos_token_id]
        start = 0
        while start < len(doc):
            room = seq_len - len(ids)
            piece = doc[start : start + room]
            ids.extend(piece)
            pos.extend(range(len(piece)))
            labels.extend([IGNORE_INDEX] + piece[1:])
            start += len(piece)
            if len(ids) == seq_len:
                yield {"input_ids": ids, "position_ids": pos, "labels": labels}
                ids, pos, labels = [], [], []
    if ids and not drop_last:
        pad = seq_len - len(ids)
        last_pos = pos[-1]
        ids.extend([eos_token_id] * pad)
        pos.extend(range(last_pos + 1, last_pos + 1 + pad))
        labels.extend([IGNORE_INDEX] * pad)
        yield {"input_ids": ids, "position_ids": pos, "labels": labels}
