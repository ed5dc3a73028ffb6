"""The quickstart: from nothing to a Hugging Face model folder that generates text, on a CPU.

Steps: write the built-in generated corpus (or use `--data` files for pretraining) -> train the ByteLevel
BPE tokenizer -> pretrain a small MiniMind on packed text with the native trainer
(`minimind_hf.native.pretrain`: documents never attend to each other) -> supervised fine-tuning on the
built-in conversations (`minimind_hf.native.sft`: loss on assistant tokens only, packed) -> a
self-contained model folder (weights + config + tokenizer + model code) -> reload it with
`AutoModelForCausalLM(..., trust_remote_code=True)` and answer held-out arithmetic problems in chat form.

GRPO with the math reward (`minimind_hf.native.grpo`) is the next step to wire in here.
"""

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import load_records
from .data.demo_corpus import heldout_problems, write_demo_corpus
from .tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

# A model that learns the generated corpus in a few CPU minutes: 4 layers, hidden 128, ~1.6M parameters (vocab 6400).
QUICKSTART_MODEL = dict(
    hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
    intermediate_size=384,
)


@dataclass
class QuickstartSettings:
    out_dir: Path
    data: list[str] = field(default_factory=list)  # pretrain jsonl files; empty = built-in corpus
    preset: str | None = None  # None = QUICKSTART_MODEL on top of "tiny"
    vocab_size: int = 6400
    seq_len: int = 256
    batch_size: int = 16
    max_steps: int = 300  # pretraining optimizer steps
    learning_rate: float = 3e-3
    sft_steps: int | None = None  # None = max_steps // 2; 0 = skip SFT
    sft_learning_rate: float = 1e-3
    sft_conversations: int = 3000
    pretrain_docs: int = 12_000
    samples: int = 6
    seed: int = 0


def _prompt_for(question: str, lang: str) -> str:
    """The corpus's own worked-example layout (`问：…\n答：` / `Q: …\nA:`), so a pretrained model can answer."""
    return f"问：{question}\n答：" if lang == "zh" else f"Q: {question}\nA:"


_ANSWER = re.compile(r"(?:答案是|answer is)\s*(-?\d+)")


def stated_answer(completion: str) -> str | None:
    """The number after the corpus's fixed answer phrase (`答案是 N。` / `The answer is N.`), if any."""
    match = _ANSWER.search(completion)
    return match.group(1) if match else None


def _chat_answer(model, tokenizer, question: str, max_new_tokens: int = 48) -> str:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def run_quickstart(settings: QuickstartSettings) -> dict:
    """Run every step; return a summary dict (also written to `out_dir/quickstart.json`)."""
    from transformers import AutoModelForCausalLM, pipeline

    from .native.config import load_config
    from .native.pretrain import PretrainConfig, run_pretrain
    from .native.sft import SFTConfig, run_sft

    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    summary: dict = {"out_dir": str(out)}
    t0 = time.time()

    # 1. corpus (the built-in one is always written: SFT uses its conversations)
    paths = write_demo_corpus(out / "corpus", {"pretrain": settings.pretrain_docs, "sft": settings.sft_conversations})
    if settings.data:
        pretrain_files = [str(p) for p in settings.data]
        logger.info("using pretrain data from %s", ", ".join(pretrain_files))
    else:
        pretrain_files = [str(paths["pretrain"])]
        logger.info("wrote the built-in corpus to %s", out / "corpus")
    texts = load_records("pretrain", pretrain_files)

    # 2. tokenizer
    tokenizer = train_tokenizer(texts["text"], vocab_size=settings.vocab_size)
    tokenizer.save_pretrained(out / "tokenizer")
    summary["vocab_size"] = len(tokenizer)
    summary["corpus_documents"] = len(texts)

    # 3 + 4. native pretraining on packed rows (no padding; documents never attend to each other)
    model_overrides = {} if settings.preset else dict(QUICKSTART_MODEL)
    common = dict(tokenizer=str(out / "tokenizer"), preset=settings.preset or "tiny", model_overrides=model_overrides,
                  seed=settings.seed, report_to=["none"], resume="never", weight_decay=0.01, max_grad_norm=1.0,
                  log_every=max(1, settings.max_steps // 20))
    pre_cfg = load_config(PretrainConfig, None, dict(
        common, data=pretrain_files, output_dir=str(out / "pretrain"), seq_len=settings.seq_len,
        batch_size=settings.batch_size, max_steps=settings.max_steps, learning_rate=settings.learning_rate,
        warmup_steps=max(1, settings.max_steps // 20)))
    pre = run_pretrain(pre_cfg)
    losses = pre.losses
    summary.update(first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None,
                   train_seconds=round(pre.seconds, 1))
    model_dir = out / "pretrain"

    # 5. native SFT: the model learns to answer in chat form (loss on assistant tokens only, packed rows)
    sft_steps = settings.max_steps // 2 if settings.sft_steps is None else settings.sft_steps
    if sft_steps > 0:
        common.pop("tokenizer")
        sft_cfg = load_config(SFTConfig, None, dict(
            common, model=str(model_dir), data=[str(paths["sft"])], output_dir=str(out / "model"),
            max_length=settings.seq_len, batch_size=settings.batch_size, max_steps=sft_steps,
            learning_rate=settings.sft_learning_rate, warmup_steps=max(1, sft_steps // 20), model_overrides={}))
        sft = run_sft(sft_cfg)
        summary.update(sft_first_loss=sft.losses[0], sft_final_loss=sft.losses[-1],
                       sft_seconds=round(sft.seconds, 1))
        model_dir = out / "model"
    summary["model_dir"] = str(model_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    summary["parameters"] = sum(p.numel() for p in reloaded.parameters())
    logger.info("model: %.2fM parameters", summary["parameters"] / 1e6)

    # 6. reload the folder the way a user would, and answer held-out problems (never seen in training)
    reloaded.eval()
    samples = []
    generator = None if sft_steps > 0 else pipeline("text-generation", model=reloaded, tokenizer=tokenizer)
    for problem in heldout_problems(settings.samples):
        if generator is None:
            prompt = problem["question"]
            text = _chat_answer(reloaded, tokenizer, prompt)
        else:
            prompt = _prompt_for(problem["question"], problem["lang"])
            text = generator(prompt, max_new_tokens=32, do_sample=False, return_full_text=False)[0]["generated_text"]
        samples.append({"prompt": prompt, "completion": text, "answer": problem["answer"],
                        "correct": stated_answer(text) == problem["answer"]})
    summary["samples"] = samples
    summary["heldout_correct"] = sum(s["correct"] for s in samples)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["perplexity_last"] = math.exp(losses[-1]) if losses else None
    (out / "quickstart.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    return summary
