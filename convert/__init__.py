"""Converters: Qwen3 <-> MiniMind, original .pth, LoRA merge, GGUF, Ollama (installed as minimind_hf.convert).

    from minimind_hf.convert import to_qwen3, from_qwen3, from_pth, to_pth, merge_lora, to_gguf, to_ollama

    to_qwen3("runs/quickstart/model", "out/qwen3")          # plain Qwen3ForCausalLM folder,
                                                            # `vllm serve out/qwen3`
    to_gguf("runs/quickstart/model", "out/model.gguf", outtype="q8_0")   # llama.cpp, tokenizer inside
    to_ollama("runs/quickstart/model", "out/ollama")        # model.gguf + Modelfile for `ollama create`

Command line: `minimind-hf convert --help` (or `python -m minimind_hf.convert --help`). Every converter writes
its output to a temporary path beside the target and renames it into place, and refuses to replace an
existing output unless `force=True` (`--force`). Input mistakes raise `ConversionError` with the next step.
"""

from .folders import ConversionError, read_model_folder
from .gguf_export import to_gguf
from .hf import from_qwen3, reference_config, to_qwen3
from .lora import merge_lora, register_adapter_format
from .ollama import to_ollama
from .pth import from_pth, to_pth

__all__ = [
    "ConversionError",
    "from_pth",
    "from_qwen3",
    "merge_lora",
    "read_model_folder",
    "reference_config",
    "register_adapter_format",
    "to_gguf",
    "to_ollama",
    "to_pth",
    "to_qwen3",
]
