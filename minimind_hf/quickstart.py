"""The quickstart: from nothing to an RL-tuned Hugging Face model folder that uses a calculator, on a CPU.

Stages (each one's wall time is in the summary's ``stage_seconds``):

1. write the built-in generated corpus (`minimind_hf.data.demo_corpus`: pretrain text, SFT conversations,
   tool-use conversations that call the calculator, RL prompts with ground truths); ``--data`` files replace
   the *pretrain text only*. With ``tools`` (default) the pretrain text also holds rendered tool-use
   transcripts, so the tokenizer learns the chat template's tool preamble (577 tokens without them, 243
   with) and pretraining sees the call format;
2. train the ByteLevel BPE tokenizer;
3. pretrain a small MiniMind on packed text with the native trainer (`minimind_hf.native.pretrain`:
   documents never attend to each other);
4. supervised fine-tuning on the built-in conversations (`minimind_hf.native.sft`: loss on assistant tokens
   only, packed) -> ``out/sft``;
5. held-out accuracy of the SFT model: ``eval_problems`` generated problems from reserved keys
   (`heldout_problems`, never produced by any training generator), chat template with the closed think
   block, greedy, batched with left padding, scored by the ``accuracy`` reward (`minimind_hf.rewards`);
6. RL on the corpus's ``rl.jsonl`` -> ``out/model``, the final self-contained folder: with ``tools``, the
   agentic stage (`minimind_hf.native.agent`: multi-turn rollouts that run the calculator; rewards accuracy,
   tool_format, unfinished -- nothing rewards a call as such), else GRPO (`minimind_hf.native.grpo`) with the
   ``accuracy`` reward. The tool-use SFT rows offer the calculator but use it in only
   ``1 - tool_direct_share`` of them, so the SFT model often answers by itself (and gets 2-digit arithmetic
   wrong); RL learns from the answers' reward where calling pays;
7. the same held-out accuracy again -- same problems, same greedy decoding, same reward -- on the folder
   reloaded with ``AutoModelForCausalLM(..., trust_remote_code=True)``, and a few sample answers.

Held-out answers are scored with the calculator available when ``tools`` is on (the model decides to call it).
A second held-out set (``novel_problems``) asks reserved keys in wordings no training generator uses: it
measures whether the model learned the operation or the templates, and is reported separately.
``out/quickstart.json`` holds the summary: ``heldout: {sft: {accuracy, ci95, n, tool_call_rate}, rl: {...}}``,
the same for ``novel`` (also ``heldout_accuracy_before`` / ``heldout_accuracy_after``) and ``stage_seconds``;
``out/report.md`` shows each stage's curves and the accuracies as bars with their intervals
(`minimind_hf.report`). ``sft_steps=0`` skips SFT (GRPO then starts from the pretrained model);
``grpo_steps=0`` skips GRPO (the SFT folder is the final model and both accuracies are the SFT model's).
"""

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import load_records
from .data.demo_corpus import heldout_problems, novel_problems, write_demo_corpus
from .report import write_quickstart_report
from .tokenizer import train_tokenizer

logger = logging.getLogger(__name__)

# A model that learns the generated corpus in a few CPU minutes: 4 layers, hidden 128, ~1.1M parameters (the
# built-in corpus fills ~2,250 of the 6,400 vocabulary slots, so the embedding stays small).
QUICKSTART_MODEL = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    intermediate_size=384,
)


@dataclass
class QuickstartSettings:
    out_dir: Path
    data: list[str] = field(default_factory=list)  # pretrain jsonl files; empty = built-in corpus
    preset: str | None = None  # None = QUICKSTART_MODEL on top of "tiny"
    vocab_size: int = 6400
    split_digits: bool = (
        True  # one token per digit (Qwen2's pre-tokenizer): arithmetic the model can generalise
    )
    seq_len: int = 256
    batch_size: int = 16
    max_steps: int = 600  # pretraining optimizer steps (fewer leave SFT too little to build on)
    learning_rate: float = 3e-3
    sft_steps: int | None = None  # None = 2/3 of max_steps; 0 = skip SFT
    sft_learning_rate: float = 1e-3
    sft_conversations: int = 3000
    pretrain_docs: int = 12_000
    tools: bool = True  # tool-use SFT + agentic RL with the calculator; False = the single-turn GRPO pipeline
    tool_conversations: int = 1000  # tool-use SFT rows (the calculator offered)
    # Of those, rows answered without calling it: high enough that the SFT model mostly does not call (greedy
    # picks the majority habit), so RL has something to teach (README: measured effect)
    tool_direct_share: float = 0.8
    tool_pretrain_docs: int = 1500  # rendered tool-use transcripts added to the pretrain text
    # RL on the corpus's rl.jsonl (the agent stage with tools, else GRPO), accuracy reward
    grpo_steps: int = 120  # optimizer steps; 0 = skip RL (60 left the Muon-pretrained model at 83% held-out)
    grpo_prompts: int = 4  # prompts per step (each sampled grpo_group times)
    grpo_group: int = 8  # G, samples per prompt
    grpo_learning_rate: float = 3e-5  # higher rates measured worse on this 1M model (see the issue notes)
    grpo_beta: float = 0.0  # k3 KL coefficient (0 = no reference model)
    grpo_temperature: float = 1.0
    max_new_tokens: int = 96  # completion budget of GRPO samples and of the held-out evaluation
    rl_prompts: int = 2000
    # held-out evaluation
    eval_problems: int = 500  # generated held-out problems scored before and after GRPO (0 = skip)
    novel_problems: int = 300  # held-out problems in wordings no training generator uses (0 = skip)
    eval_batch: int = 50  # rows generated at once
    samples: int = 6  # sample answers shown (the first `samples` held-out problems)
    threads: int = 0  # torch CPU threads; 0 = torch's default (1 is often faster on a busy machine)
    seed: int = 0


_ANSWER = re.compile(r"(?:答案是|answer is)\s*(-?\d+)")


def stated_answer(completion: str) -> str | None:
    """The number after the corpus's fixed answer phrase (`答案是 N。` / `The answer is N.`), if any."""
    match = _ANSWER.search(completion)
    return match.group(1) if match else None


@torch.no_grad()
def heldout_accuracy(
    model,
    tokenizer,
    problems: list[dict],
    max_new_tokens: int = 96,
    batch: int = 50,
    tools: dict | None = None,
) -> tuple[float, list[dict]]:
    """Greedy chat-form answers to ``problems`` (batched, left-padded), scored by the ``accuracy`` reward.

    Prompts are rendered exactly as GRPO renders its prompts (chat template, closed think block). Returns
    ``(accuracy in [0, 1], [{"prompt", "completion", "answer", "correct", "stated"}, ...])``; ``stated``:
    the answer was given in the corpus's own phrase (`stated_answer`), not just as the last number;
    ``tool_calls``: the calls the model made (`tools` run between turns, up to 3 turns)."""
    from .native.rollout import rollout
    from .rewards import get_reward

    if not problems:
        return 0.0, []
    reward = get_reward("accuracy")
    records = [{"prompt": [{"role": "user", "content": p["question"]}]} for p in problems]
    turns = {"tools": tools, "max_turns": 3, "max_tool_response_tokens": 32} if tools else {}
    r = rollout(
        model,
        tokenizer,
        records,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        generation_chunk=batch,
        **turns,
    )
    texts = r.texts
    scores = reward(texts, ground_truth=[p["answer"] for p in problems])
    rows = [
        {
            "prompt": p["question"],
            "completion": t,
            "answer": p["answer"],
            "correct": bool(ok),
            "stated": stated_answer(t) == p["answer"],
            "tool_calls": calls,
        }
        for p, t, ok, calls in zip(problems, texts, scores, r.tool_calls, strict=True)
    ]
    return sum(scores) / len(scores), rows


def run_quickstart(settings: QuickstartSettings) -> dict:
    """Run every step; return a summary dict (also written to `out_dir/quickstart.json`)."""
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    summary: dict = {"out_dir": str(out), "stage_seconds": {}}
    laps = _Laps(summary["stage_seconds"])

    paths, pretrain_files, texts = _write_corpus(settings, out)  # 1. corpus
    laps("corpus")
    tokenizer = train_tokenizer(
        texts["text"], vocab_size=settings.vocab_size, split_digits=settings.split_digits
    )
    tokenizer.save_pretrained(out / "tokenizer")  # 2. tokenizer
    summary.update(vocab_size=len(tokenizer), corpus_documents=len(texts))
    laps("tokenizer")
    common = _common_settings(settings, out)
    losses = _pretrain(settings, out, common, pretrain_files, summary)  # 3. pretraining
    model_dir = out / "pretrain"
    laps("pretrain")
    common.pop("tokenizer")
    common["model_overrides"] = {}
    if _sft(settings, out, common, paths, model_dir, summary):  # 4. SFT
        model_dir = out / "sft"
        laps("sft")
    held_out = _HeldOut(settings, tokenizer)  # 5. held-out accuracy before RL
    before = held_out.measure(model_dir, summary, "before")
    laps("eval_before")
    if settings.grpo_steps > 0:  # 6. GRPO (agentic with tools) -> the final folder
        _grpo(settings, out, common, paths, model_dir, summary)
        model_dir = out / "model"
        laps("grpo")
    summary["model_dir"] = str(model_dir)
    held_out.final(model_dir, summary, before, rl_ran=settings.grpo_steps > 0)  # 7. the final folder reloaded
    laps("eval_after")
    summary["seconds"] = round(time.time() - laps.start, 1)
    summary["perplexity_last"] = math.exp(losses[-1]) if losses else None
    (out / "quickstart.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    write_quickstart_report(out, summary)
    return summary


class _Laps:
    """Seconds per quickstart stage, logged as each ends."""

    def __init__(self, stages: dict):
        self.stages, self.start = stages, time.time()
        self.clock = self.start

    def __call__(self, name: str) -> None:
        now = time.time()
        self.stages[name] = round(now - self.clock, 1)
        self.clock = now
        logger.info("quickstart: %s done in %.1fs", name, self.stages[name])


def _write_corpus(settings: QuickstartSettings, out: Path) -> tuple[dict, list[str], Any]:
    """The built-in corpus (always written: SFT and GRPO use its conversations and prompts), the pretraining
    files (the user's `data`, or the corpus's), and their records."""
    sizes = {"pretrain": settings.pretrain_docs, "sft": settings.sft_conversations, "rl": settings.rl_prompts}
    parts = ["pretrain", "sft", "rl"]
    if settings.tools:
        sizes["tools"] = settings.tool_conversations
        parts.append("tools")
    paths = write_demo_corpus(
        out / "corpus", sizes, parts=tuple(parts), tool_direct_share=settings.tool_direct_share
    )
    if settings.data:
        pretrain_files = [str(p) for p in settings.data]
        logger.info("using pretrain data from %s", ", ".join(pretrain_files))
    else:
        pretrain_files = [str(paths["pretrain"])]
        logger.info("wrote the built-in corpus to %s", out / "corpus")
    if settings.tools and settings.tool_pretrain_docs:
        transcripts = write_tool_transcripts(
            out / "corpus" / "tool_transcripts.jsonl", settings.tool_pretrain_docs
        )
        pretrain_files.append(str(transcripts))
    return paths, pretrain_files, load_records("pretrain", pretrain_files)


def _common_settings(settings: QuickstartSettings, out: Path) -> dict:
    """The native stage settings every quickstart stage shares."""
    return dict(
        tokenizer=str(out / "tokenizer"),
        preset=settings.preset or "tiny",
        model_overrides={} if settings.preset else dict(QUICKSTART_MODEL),
        seed=settings.seed,
        report_to=["none"],
        resume="never",
        weight_decay=0.01,
        max_grad_norm=1.0,
        log_every=max(1, settings.max_steps // 20),
        num_threads=settings.threads,
    )


def _pretrain(settings: QuickstartSettings, out: Path, common: dict, files: list[str], summary: dict) -> list:
    """Native pretraining on packed rows (no padding; documents never attend to each other)."""
    from .native.config import load_config
    from .native.pretrain import PretrainConfig, run_pretrain

    values = dict(
        common,
        data=files,
        output_dir=str(out / "pretrain"),
        seq_len=settings.seq_len,
        batch_size=settings.batch_size,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        warmup_steps=max(1, settings.max_steps // 20),
    )
    pre = run_pretrain(load_config(PretrainConfig, None, values))
    losses = pre.losses
    summary.update(
        first_loss=losses[0] if losses else None,
        final_loss=losses[-1] if losses else None,
        train_seconds=round(pre.seconds, 1),
    )
    return losses


def _sft(
    settings: QuickstartSettings, out: Path, common: dict, paths: dict, model_dir: Path, summary: dict
) -> bool:
    """Native SFT: the model learns to answer in chat form (loss on assistant tokens only, packed rows).
    False when the settings skip it."""
    from .native.config import load_config
    from .native.sft import SFTConfig, run_sft

    steps = settings.max_steps * 2 // 3 if settings.sft_steps is None else settings.sft_steps
    if steps <= 0:
        return False
    values = dict(
        common,
        model=str(model_dir),
        data=[str(paths["sft"])] + ([str(paths["tools"])] if settings.tools else []),
        output_dir=str(out / "sft"),
        max_length=settings.seq_len,
        batch_size=settings.batch_size,
        max_steps=steps,
        learning_rate=settings.sft_learning_rate,
        warmup_steps=max(1, steps // 20),
        log_every=max(1, steps // 20),
    )
    sft = run_sft(load_config(SFTConfig, None, values))
    summary.update(
        sft_first_loss=sft.losses[0], sft_final_loss=sft.losses[-1], sft_seconds=round(sft.seconds, 1)
    )
    return True


def _grpo(
    settings: QuickstartSettings, out: Path, common: dict, paths: dict, model_dir: Path, summary: dict
) -> None:
    """Native GRPO with the math reward on the corpus's rl prompts (agentic, with the calculator, under
    `tools`); its folder is the quickstart's model."""
    from .native.agent import AgentConfig, run_agent
    from .native.config import load_config
    from .native.grpo import GRPOConfig, run_grpo

    # No reward for calling as such (the agent stage's tool_use): RL has to find out from the answers
    # alone where the calculator pays (arithmetic) and where it does not (unit conversions).
    agent = dict(
        rewards=["accuracy", "tool_format", "unfinished"],
        reward_weights=[1.0, 0.5, 0.5],
        max_tool_response_tokens=32,
    )
    rollout_rows = settings.grpo_prompts * settings.grpo_group
    values = dict(
        common,
        **(agent if settings.tools else {"rewards": ["accuracy"]}),
        model=str(model_dir),
        data=[str(paths["rl"])],
        output_dir=str(out / "model"),
        num_generations=settings.grpo_group,
        batch_size=settings.grpo_prompts,
        max_steps=settings.grpo_steps,
        learning_rate=settings.grpo_learning_rate,
        beta=settings.grpo_beta,
        temperature=settings.grpo_temperature,
        max_new_tokens=settings.max_new_tokens,
        warmup_steps=max(1, settings.grpo_steps // 10),
        min_lr_ratio=0.5,
        loss_type="dapo",
        generation_chunk=rollout_rows,
        logprob_chunk=rollout_rows,
        log_every=1,
    )
    cfg = load_config(AgentConfig if settings.tools else GRPOConfig, None, values)
    grpo = run_agent(cfg) if settings.tools else run_grpo(cfg)
    log = [json.loads(line) for line in (out / "model" / "train_log.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in log if "reward" in r]
    quarter = max(1, len(rewards) // 4)
    summary.update(
        grpo_steps=grpo.steps,
        grpo_seconds=round(grpo.seconds, 1),
        grpo_reward_first=rewards[0] if rewards else None,
        grpo_reward_last=rewards[-1] if rewards else None,
        grpo_reward_mean_first_quarter=_mean(rewards[:quarter]),
        grpo_reward_mean_last_quarter=_mean(rewards[-quarter:]),
    )


class _HeldOut:
    """Held-out accuracy (greedy, the same problems before and after RL) and the sample answers."""

    def __init__(self, settings: QuickstartSettings, tokenizer):
        from .tools import get_tools

        self.settings, self.tokenizer = settings, tokenizer
        self.problems = heldout_problems(max(settings.eval_problems, settings.samples))
        self.eval_set = self.problems[: settings.eval_problems]
        self.novel_set = novel_problems(settings.novel_problems)
        self.tools = get_tools(["calculator"]) if settings.tools else None

    def evaluate(self, model, problems: list[dict]) -> tuple[float, list[dict]]:
        s = self.settings
        return heldout_accuracy(model, self.tokenizer, problems, s.max_new_tokens, s.eval_batch, self.tools)

    def measure(self, model_dir: Path, summary: dict, when: str) -> tuple:
        """(accuracy, rows, novel rows) of the folder, recorded in the summary as ``..._before``."""
        from transformers import AutoModelForCausalLM

        policy = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
        acc, rows = self.evaluate(policy, self.eval_set)
        novel = self.evaluate(policy, self.novel_set)[1]
        summary.update(
            eval_problems=len(self.eval_set),
            **{
                f"heldout_accuracy_{when}": acc,
                f"heldout_stated_accuracy_{when}": _mean([r["stated"] for r in rows]),
            },
        )
        logger.info("held-out accuracy after SFT: %.1f%% of %d", 100 * acc, len(self.eval_set))
        return acc, rows, novel

    def final(self, model_dir: Path, summary: dict, before: tuple, rl_ran: bool) -> None:
        """Reload the final folder the way a user would; the same held-out problems again; sample answers."""
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
        summary["parameters"] = sum(p.numel() for p in reloaded.parameters())
        logger.info("model: %.2fM parameters", summary["parameters"] / 1e6)
        acc_before, rows_before, novel_before = before
        if rl_ran:
            acc_after, rows_after = self.evaluate(reloaded, self.eval_set)
            novel_after = self.evaluate(reloaded, self.novel_set)[1]
        else:
            acc_after, rows_after, novel_after = acc_before, rows_before, novel_before
        summary.update(
            heldout_accuracy_after=acc_after,
            heldout_stated_accuracy_after=_mean([r["stated"] for r in rows_after]),
            tools=self.settings.tools,
            heldout={"sft": _heldout_summary(rows_before), "rl": _heldout_summary(rows_after)},
            novel={"sft": _heldout_summary(novel_before), "rl": _heldout_summary(novel_after)},
        )
        logger.info("held-out accuracy after RL: %.1f%% of %d", 100 * acc_after, len(self.eval_set))
        shown = rows_after[: self.settings.samples]
        if len(shown) < self.settings.samples:  # more samples asked than evaluated problems
            shown += self.evaluate(reloaded, self.problems[len(shown) : self.settings.samples])[1]
        summary["samples"] = shown
        summary["heldout_correct"] = sum(s["correct"] for s in shown)


def _heldout_summary(rows: list[dict]) -> dict:
    from .eval.tool_calls import wilson_interval

    k, n = sum(r["correct"] for r in rows), len(rows)
    return {
        "accuracy": k / n if n else 0.0,
        "ci95": list(wilson_interval(k, n)),
        "n": n,
        "tool_call_rate": sum(bool(r["tool_calls"]) for r in rows) / n if n else 0.0,
    }


def write_tool_transcripts(path: Path, n: int) -> Path:
    """``n`` built-in tool-use conversations rendered by the chat template, as pretrain ``{"text"}`` rows (the
    template is rendered by a throwaway tokenizer; only its text is kept)."""
    from .data.demo_corpus import tool_conversations

    render = train_tokenizer(["tool use"], vocab_size=300, show_progress=False)
    with path.open("w", encoding="utf-8") as f:
        for row in tool_conversations(n, seed=77):
            text = render.apply_chat_template(row["conversations"], tools=row["tools"], tokenize=False)
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return path


def _mean(xs: list) -> float | None:
    return sum(xs) / len(xs) if xs else None
