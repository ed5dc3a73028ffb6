"""The quickstart: from nothing to a Hugging Face model folder that generates text, on a CPU.

Steps: write the built-in generated corpus (or use `--data` files) -> train the ByteLevel BPE
tokenizer -> tokenise and pack the pretrain text -> pretrain a small MiniMind with transformers'
`Trainer` -> save a self-contained model folder (weights + config + tokenizer + model code) -> reload it
with `AutoModelForCausalLM(..., trust_remote_code=True)` and complete held-out arithmetic prompts.

This is the foundation version; the native trainers (SFT, GRPO with the math reward) extend it.
"""

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .configuration_minimind import MiniMindConfig
from .data import load_records
from .data.demo_corpus import heldout_problems, write_demo_corpus
from .data.packing import pack_documents
from .modeling_minimind import MiniMindForCausalLM
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
    max_steps: int = 300
    learning_rate: float = 3e-3
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


def run_quickstart(settings: QuickstartSettings) -> dict:
    """Run every step; return a summary dict (also written to `out_dir/quickstart.json`)."""
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, pipeline

    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    summary: dict = {"out_dir": str(out)}
    t0 = time.time()

    # 1. corpus
    if settings.data:
        pretrain_files = [str(p) for p in settings.data]
        logger.info("using pretrain data from %s", ", ".join(pretrain_files))
    else:
        paths = write_demo_corpus(out / "corpus", {"pretrain": settings.pretrain_docs})
        pretrain_files = [str(paths["pretrain"])]
        logger.info("wrote the built-in corpus to %s", out / "corpus")
    texts = load_records("pretrain", pretrain_files)

    # 2. tokenizer
    tokenizer = train_tokenizer(texts["text"], vocab_size=settings.vocab_size)
    tokenizer.save_pretrained(out / "tokenizer")
    summary["vocab_size"] = len(tokenizer)

    # 3. tokenise + pack (no padding; documents never attend to each other)
    encoded = texts.map(
        lambda batch: {"ids": tokenizer(batch["text"], add_special_tokens=False)["input_ids"]},
        batched=True, remove_columns=texts.column_names, desc="tokenising",
    )
    from datasets import Dataset

    rows = list(pack_documents(encoded["ids"], settings.seq_len, tokenizer.eos_token_id))
    train_set = Dataset.from_list(rows)
    corpus_tokens = sum(len(ids) + 1 for ids in encoded["ids"])
    summary.update(corpus_tokens=corpus_tokens, packed_rows=len(rows))
    logger.info("%d tokens packed into %d rows of %d", corpus_tokens, len(rows), settings.seq_len)

    # 4. model
    if settings.preset:
        config = MiniMindConfig.from_preset(settings.preset, vocab_size=len(tokenizer))
    else:
        config = MiniMindConfig.from_preset("tiny", vocab_size=len(tokenizer), **QUICKSTART_MODEL)
    model = MiniMindForCausalLM(config)
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    logger.info("model: %.2fM parameters", summary["parameters"] / 1e6)

    # 5. pretrain
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=settings.batch_size,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, settings.max_steps // 20),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, settings.max_steps // 20),
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        seed=settings.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_set)
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary.update(first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None,
                   train_seconds=round(result.metrics["train_runtime"], 1))

    # 6. a self-contained Hugging Face folder
    model_dir = out / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    summary["model_dir"] = str(model_dir)

    # 7. reload the folder the way a user would, and complete held-out problems
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    generator = pipeline("text-generation", model=reloaded, tokenizer=tokenizer)
    samples = []
    for problem in heldout_problems(settings.samples):
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
