"""`minimind-hf convert ...` (also `python -m minimind_hf.convert ...`).

    convert to-qwen3   SRC OUT [--dtype auto|float32|float16|bfloat16] [--force]
    convert from-qwen3 SRC OUT [--dtype ...] [--force]
    convert from-pth   CKPT.pth OUT (--preset NAME | --config config.json) --tokenizer DIR
                       [--dtype ...] [--force]
    convert to-pth     SRC OUT.pth [--dtype float16] [--force]
    convert merge-lora BASE ADAPTER OUT [--dtype ...] [--force]
    convert to-gguf    SRC OUT.gguf [--outtype f32|f16|bf16|q8_0] [--force]
    convert to-ollama  SRC OUT_DIR [--outtype q8_0] [--name minimind] [--system TEXT] [--num-ctx N] [--force]

`add_convert_commands(subparsers)` registers the `convert` group on the main CLI; `run(args)` executes a
parsed command. Errors in the input (wrong preset, not a model folder, existing output) exit with code 2
and one message, no traceback.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger("minimind_hf.convert")

EXIT_OK = 0
EXIT_USAGE = 2

_DTYPE_HELP = "weights dtype of the output: auto (keep the source's), float32, float16 or bfloat16"


def _common(p: argparse.ArgumentParser, dtype_default: str | None = "auto", tokenizer: bool = True) -> None:
    if dtype_default is not None:
        p.add_argument("--dtype", default=dtype_default, help=f"{_DTYPE_HELP} (default {dtype_default})")
    if tokenizer:
        p.add_argument(
            "--tokenizer",
            metavar="DIR",
            default=None,
            help="take the tokenizer files (tokenizer.json, tokenizer_config.json, chat template) from "
            "DIR instead of the source folder",
        )
    p.add_argument("--force", action="store_true", help="replace an existing output")


_DESCRIPTION = (
    "Convert MiniMind models to and from other formats. Every output is written to a temporary path beside "
    "the target and renamed into place when complete; an existing output is only replaced with --force."
)


def add_convert_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `convert` and its subcommands on the main CLI's subparsers; return the `convert` parser."""
    parser = subparsers.add_parser(
        "convert",
        help="export/import: Qwen3 (transformers, vLLM), original .pth, LoRA merge, GGUF (llama.cpp), Ollama",
        description=_DESCRIPTION,
    )
    _add_subcommands(parser)
    return parser


def _add_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="convert_command", metavar="COMMAND", required=True)
    for add in (
        _add_to_qwen3,
        _add_from_qwen3,
        _add_from_pth,
        _add_to_pth,
        _add_merge_lora,
        _add_to_gguf,
        _add_to_ollama,
    ):
        add(sub)
    parser.set_defaults(func=run)


def _add_to_qwen3(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "to-qwen3",
        help="MiniMind folder -> plain transformers Qwen3/Qwen3-MoE/Llama folder (vLLM)",
        description="The result loads with AutoModelForCausalLM (no trust_remote_code) and serves "
        "with `vllm serve OUT`.",
    )
    p.add_argument("src", help="MiniMind model folder")
    p.add_argument("out", help="output folder")
    _common(p)
    p.set_defaults(convert_func=_to_qwen3)


def _add_from_qwen3(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "from-qwen3", help="plain transformers Qwen3/Qwen3-MoE/Llama/Mixtral folder -> MiniMind folder"
    )
    p.add_argument("src", help="transformers model folder")
    p.add_argument("out", help="output folder")
    _common(p)
    p.set_defaults(convert_func=_from_qwen3)


def _add_from_pth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "from-pth",
        help="original MiniMind .pth state dict (or a folder its code saved) -> MiniMind folder",
        description="A .pth has no config: give --preset or --config (ours or the original's), and "
        "--tokenizer. A folder saved by the original's code (config.json + weights in its layout) "
        "needs neither.",
    )
    p.add_argument("pth", help="native checkpoint, e.g. out/full_sft_768.pth, or a folder the original saved")
    p.add_argument("out", help="output folder")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", help="minimind3, minimind3-moe, minimind2-small, minimind2, tiny")
    group.add_argument("--config", metavar="JSON", help="config.json (ours or the original MiniMind's)")
    p.add_argument("--vocab-size", type=int, default=None, help="override the preset's vocab size")
    p.add_argument("--inference-rope-scaling", action="store_true", help="enable MiniMind's YaRN (factor 16)")
    p.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="tokenizer folder (the original repository's model/ folder, or any MiniMind model folder); "
        "required for a .pth, default for a folder: its own",
    )
    _common(p, tokenizer=False)
    p.set_defaults(convert_func=_from_pth)


def _add_to_pth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("to-pth", help="MiniMind folder -> original MiniMind .pth state dict (fp16)")
    p.add_argument("src", help="MiniMind (or Qwen3-family) model folder")
    p.add_argument("out", help="output .pth file")
    _common(p, dtype_default="float16", tokenizer=False)
    p.set_defaults(convert_func=_to_pth)


def _add_merge_lora(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge-lora",
        help="base folder + LoRA adapter (peft, or the original MiniMind's .pth) -> full model folder",
    )
    p.add_argument("base", help="base model folder (MiniMind or Qwen3-family)")
    p.add_argument(
        "adapter",
        help="adapter: a peft folder (adapter_config.json + adapter_model.safetensors) or the original "
        "MiniMind's LoRA .pth (e.g. out/lora/lora_identity_768.pth)",
    )
    p.add_argument("out", help="output folder")
    p.add_argument(
        "--allow-other-base",
        action="store_true",
        help="merge even though the adapter records another local base model (same shapes, other weights)",
    )
    _common(p)
    p.set_defaults(convert_func=_merge_lora)


def _add_to_gguf(sub: argparse._SubParsersAction) -> None:
    from .gguf_export import OUTTYPES

    p = sub.add_parser(
        "to-gguf", help="model folder -> GGUF for llama.cpp (tokenizer and chat template inside)"
    )
    p.add_argument("src", help="MiniMind (or Qwen3-family) model folder")
    p.add_argument("out", help="output .gguf file")
    p.add_argument("--outtype", choices=OUTTYPES, default="f16", help="tensor type (default f16)")
    p.add_argument(
        "--pre-tokenizer", default=None, help="llama.cpp pre-tokenizer name (default: detected, gpt-2)"
    )
    _common(p, dtype_default=None)
    p.set_defaults(convert_func=_to_gguf)


def _add_to_ollama(sub: argparse._SubParsersAction) -> None:
    from .gguf_export import OUTTYPES

    p = sub.add_parser(
        "to-ollama", help="model folder -> folder with model.gguf + Modelfile for `ollama create`"
    )
    p.add_argument("src", help="MiniMind (or Qwen3-family) model folder")
    p.add_argument("out", help="output folder")
    p.add_argument("--outtype", choices=OUTTYPES, default="q8_0", help="GGUF tensor type (default q8_0)")
    p.add_argument("--name", default="minimind", help="model name used in the printed commands")
    p.add_argument("--system", default=None, help="default system prompt (Modelfile SYSTEM)")
    p.add_argument("--num-ctx", type=int, default=None, help="context length (default 2048)")
    _common(p, dtype_default=None)
    p.set_defaults(convert_func=_to_ollama)


def _to_qwen3(a):
    from .hf import to_qwen3

    out = to_qwen3(a.src, a.out, dtype=a.dtype, tokenizer=a.tokenizer, force=a.force)
    print(
        f"Wrote {out}. Load with AutoModelForCausalLM.from_pretrained({str(out)!r}); "
        f"serve with: vllm serve {out}"
    )


def _from_qwen3(a):
    from .hf import from_qwen3

    out = from_qwen3(a.src, a.out, dtype=a.dtype, tokenizer=a.tokenizer, force=a.force)
    print(f"Wrote {out} (MiniMind; loads with trust_remote_code=True or after `import minimind_hf`)")


def _from_pth(a):
    from .folders import ConversionError
    from .pth import from_pth

    if not Path(a.pth).is_dir():
        missing = [
            flag
            for flag, given in (("--preset or --config", a.preset or a.config), ("--tokenizer", a.tokenizer))
            if not given
        ]
        if missing:
            raise ConversionError(f"{a.pth}: a .pth checkpoint needs {' and '.join(missing)}")
    overrides = {}
    if a.vocab_size is not None:
        overrides["vocab_size"] = a.vocab_size
    if a.inference_rope_scaling:
        overrides["inference_rope_scaling"] = True
    out = from_pth(
        a.pth,
        a.out,
        preset=a.preset,
        config=a.config,
        tokenizer=a.tokenizer,
        dtype=a.dtype,
        force=a.force,
        **overrides,
    )
    print(f"Wrote {out}")


def _to_pth(a):
    from .pth import to_pth

    print(f"Wrote {to_pth(a.src, a.out, dtype=a.dtype, force=a.force)}")


def _merge_lora(a):
    from .lora import merge_lora

    out = merge_lora(
        a.base,
        a.adapter,
        a.out,
        dtype=a.dtype,
        tokenizer=a.tokenizer,
        force=a.force,
        allow_other_base=a.allow_other_base,
    )
    print(f"Wrote {out}")


def _to_gguf(a):
    from .gguf_export import to_gguf

    out = to_gguf(
        a.src, a.out, outtype=a.outtype, tokenizer=a.tokenizer, pre_tokenizer=a.pre_tokenizer, force=a.force
    )
    print(
        f"Wrote {out}. Run it with llama.cpp, e.g. llama-cli -m {out} -cnv (or "
        "llama_cpp.Llama(model_path=...))"
    )


def _to_ollama(a):
    from .ollama import to_ollama

    out = to_ollama(
        a.src,
        a.out,
        outtype=a.outtype,
        name=a.name,
        system=a.system,
        num_ctx=a.num_ctx,
        tokenizer=a.tokenizer,
        force=a.force,
    )
    print(f"Wrote {out}. Next:\n  cd {out} && ollama create {a.name} -f Modelfile && ollama run {a.name}")


def run(args: argparse.Namespace) -> int:
    from .folders import ConversionError

    try:
        args.convert_func(args)
    except ConversionError as e:
        logger.error("%s", e)
        return EXIT_USAGE
    return EXIT_OK
