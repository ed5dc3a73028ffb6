"""Perplexity and bits-per-byte of a causal LM on text, with a sliding window and exact token accounting.

What is scored, per document (a jsonl row's ``text``, or a whole ``.txt`` file):

- the text is tokenised on its own, without special tokens: ``x_1 .. x_n``;
- one prefix token ``p`` is put in front as context only (never scored), so that ``x_1`` is predicted
  too: the tokenizer's BOS, or EOS when it has no BOS (``prefix="auto"``, lm-eval's ``prefix_token_id``
  rule); ``prefix="eos"`` / ``"bos"`` force one;
- every text token ``x_1 .. x_n`` is scored exactly once; with ``score_eos=True`` an EOS is appended and
  scored as well (it then counts as a token, but adds no bytes);
- documents never see each other; a document without text tokens is skipped (not even its EOS is scored).

Sliding window: the sequence ``[p, x_1, .., x_n]`` is cut into windows of at most ``max_length`` tokens
whose ends advance by ``stride``; each window scores only the tokens not scored by the previous one, so
every token is scored once, and with at least ``max_length - stride`` tokens of context (the full history
while the document fits in one window). ``stride = max_length - 1`` gives lm-eval's rolling loglikelihood
windows (each window starts with the last token of the previous one); a smaller stride gives more context
at more compute. Default: ``max_length // 2``.

Reported: total NLL in nats, ``ppl = exp(nll / tokens)`` (per token: depends on the tokenizer) and
``bits_per_byte = nll / ln 2 / bytes`` with ``bytes`` the UTF-8 length of the texts: tokenizer-free, so
models with different tokenizers compare fairly.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 512


@dataclass
class PerplexityResult:
    """Totals over all documents; the derived metrics are properties."""

    documents: int
    tokens: int  # tokens scored
    bytes: int  # UTF-8 bytes of the texts
    nll: float  # summed negative log-likelihood, nats
    max_length: int
    stride: int

    @property
    def perplexity(self) -> float:
        """exp(mean NLL per scored token)."""
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_token(self) -> float:
        """Mean NLL per scored token in bits."""
        return self.nll / math.log(2) / self.tokens if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        """Total NLL in bits over the UTF-8 bytes of the text."""
        return self.nll / math.log(2) / self.bytes if self.bytes else float("nan")

    def to_dict(self) -> dict:
        """The totals plus perplexity, bits_per_token and bits_per_byte."""
        return {
            **asdict(self),
            "perplexity": self.perplexity,
            "bits_per_token": self.bits_per_token,
            "bits_per_byte": self.bits_per_byte,
        }


def rolling_windows(length: int, max_length: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """Windows ``(begin, end, first_target)`` over a sequence of ``length`` tokens whose position 0 is
    context.

    The window feeds tokens ``[begin, end)`` and scores targets ``[first_target, end)``; targets
    ``1 .. length-1`` are each covered exactly once, with ``end - begin <= max_length``.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if not 1 <= stride <= max_length - 1:
        raise ValueError(f"stride must be in [1, max_length - 1], got {stride} (max_length {max_length})")
    scored_to = 1  # targets before this are done
    end = min(max_length, length)
    while scored_to < length:
        begin = max(0, end - max_length)
        yield begin, end, scored_to
        scored_to = end
        end = min(end + stride, length)


def _prefix_id(tokenizer, prefix: str) -> int:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    choice = {"auto": bos if bos is not None else eos, "bos": bos, "eos": eos}.get(prefix, "bad")
    if choice == "bad":
        raise ValueError(f"prefix must be auto, bos or eos, got {prefix!r}")
    if choice is None:
        raise ValueError(
            f"prefix={prefix!r} but the tokenizer has no {prefix if prefix != 'auto' else 'bos or eos'} token"
        )
    return int(choice)


def document_ids(tokenizer, text: str, prefix_id: int, score_eos: bool = False) -> list[int]:
    """``[prefix] + tokens(text) (+ [eos])``: the sequence whose positions 1.. are scored."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if score_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("score_eos=True but the tokenizer has no eos token")
        ids = ids + [tokenizer.eos_token_id]
    return [prefix_id, *ids]


@torch.no_grad()
def _score_batch(model, batch: list[tuple[list[int], int, int, int]], pad_id: int) -> float:
    """Summed NLL of the targets of a batch of windows ``(ids, begin, end, first_target)``."""
    width = max(end - begin for _, begin, end, _ in batch)
    device = next(model.parameters()).device
    inputs = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, begin, end, _) in enumerate(batch):
        inputs[row, : end - begin] = torch.tensor(ids[begin:end])
        mask[row, : end - begin] = 1
    logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
    total = 0.0
    for row, (ids, begin, end, first) in enumerate(batch):
        # logits at window position j predict token begin + j + 1
        pred = logits[row, first - begin - 1 : end - begin - 1].float()  # (n_targets, V)
        targets = torch.tensor(ids[first:end], device=pred.device)
        total += torch.nn.functional.cross_entropy(pred, targets, reduction="sum").item()
    return total


def perplexity(
    model,
    tokenizer,
    texts: Sequence[str],
    max_length: int = DEFAULT_MAX_LENGTH,
    stride: int | None = None,
    batch_size: int = 8,
    prefix: str = "auto",
    score_eos: bool = False,
    progress: bool = True,
) -> PerplexityResult:
    """Score ``texts`` with ``model`` (see the module docstring for exactly what is scored)."""
    from tqdm.auto import tqdm

    stride = stride or max(1, max_length // 2)
    prefix_id = _prefix_id(tokenizer, prefix)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_id
    was_training = model.training
    model.eval()
    windows: list[tuple[list[int], int, int, int]] = []
    tokens = n_bytes = documents = 0
    for text in texts:
        ids = document_ids(tokenizer, text, prefix_id, score_eos)
        if len(ids) < 2 + score_eos:
            continue  # no text tokens: nothing scored, no bytes (not even the EOS)
        documents += 1
        tokens += len(ids) - 1
        n_bytes += len(text.encode("utf-8"))
        windows += [(ids, b, e, f) for b, e, f in rolling_windows(len(ids), max_length, stride)]
    windows.sort(key=lambda w: w[2] - w[1], reverse=True)  # similar lengths together: less padding
    nll = 0.0
    try:
        for i in tqdm(
            range(0, len(windows), batch_size), desc="perplexity", unit="batch", disable=not progress
        ):
            nll += _score_batch(model, windows[i : i + batch_size], pad_id)
    finally:
        model.train(was_training)
    result = PerplexityResult(documents, tokens, n_bytes, nll, max_length, stride)
    logger.info(
        "%d documents, %d tokens, %d bytes: ppl %.3f, %.4f bits/byte",
        documents,
        tokens,
        n_bytes,
        result.perplexity,
        result.bits_per_byte,
    )
    return result


def read_texts(path: str | Path, limit: int | None = None) -> list[str]:
    """Documents of a file: ``.txt`` = the whole file is one document; jsonl/json/parquet = the ``text``
    field of each row, validated by ``minimind_hf.data.load_records`` (errors name file:line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".txt":
        texts = [path.read_text(encoding="utf-8")]
    else:
        from minimind_hf.data import load_records

        texts = list(load_records("pretrain", str(path))["text"])
    return texts[:limit] if limit else texts


def load_model(model_dir: str, device: str = "cpu", dtype: str = "float32", trust_remote_code: bool = False):
    """``(model, tokenizer)`` from a model folder or Hub name (MiniMind with the package's classes; a folder's
    own code runs only with ``trust_remote_code=True``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, trust_remote_code=trust_remote_code, dtype=getattr(torch, dtype)
    )
    return model.to(device).eval(), tokenizer


def write_result(result: PerplexityResult, path: str | Path, extra: dict | None = None) -> Path:
    """Write the result (plus ``extra`` fields such as the model and data paths) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({**(extra or {}), **result.to_dict()}, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return path
