"""Converters: Qwen3 <-> MiniMind, original .pth, LoRA merge, GGUF, Ollama (installed as minimind_hf.convert)."""
