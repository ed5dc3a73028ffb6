"""Reading model folders and writing outputs safely; shared by every converter.

- `ConversionError`: the one exception the converters raise for user mistakes; its message says what to do.
- `read_model_folder(path)`: a MiniMind folder or a plain transformers Qwen3 / Qwen3-MoE / Llama / Mixtral
  folder -> `(MiniMindConfig, state_dict)`, with every weight under MiniMind's (= Qwen3's) key names.
- `atomic_output_dir` / `atomic_output_file`: write into a temporary path beside the target and rename it
  into place only when everything succeeded; refuse to replace an existing output unless `force`.
- `copy_tokenizer_files`: copy a tokenizer in any of its saved layouts (transformers 4:
  `tokenizer_config.json` holding the chat template; transformers 5: `chat_template.jinja` beside it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# model_type in config.json -> what it is. MiniMind's own folders and the plain transformers classes that
# compute exactly the same function (see tests/model/test_equivalence.py).
SUPPORTED_MODEL_TYPES = ("minimind", "qwen3", "qwen3_moe", "llama", "mixtral")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class ConversionError(ValueError):
    """A conversion cannot proceed; the message names the file/key and the next thing to try."""


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """`None`/`"auto"` -> None (keep the source dtype); otherwise a torch floating dtype."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return None
    if name not in DTYPES:
        raise ConversionError(f"unknown dtype {name!r}; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


# --------------------------------------------------------------------------------------------- reading


def read_config_json(folder: str | os.PathLike) -> dict:
    """config.json of a model folder, with a clear error when `folder` is not one."""
    folder = Path(folder)
    if not folder.exists():
        raise ConversionError(f"{folder}: no such folder")
    if folder.is_file():
        raise ConversionError(
            f"{folder} is a file, expected a model folder (config.json + *.safetensors). "
            "For an original MiniMind .pth checkpoint use `minimind-hf convert from-pth`."
        )
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(
            f"{folder} is not a model folder: no config.json. Expected a MiniMind or Qwen3 folder written by "
            "save_pretrained (config.json + model.safetensors + tokenizer files)."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from e


def model_type_of(folder: str | os.PathLike) -> str:
    """The folder's `model_type`, checked against what the converters understand."""
    model_type = read_config_json(folder).get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConversionError(
            f"{folder}: model_type {model_type!r} is not a MiniMind or Qwen3-family model; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return model_type


def load_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All weights of a folder (`minimind_hf.weights.read_weights`), a missing one as a ConversionError."""
    from minimind_hf.weights import read_weights

    try:
        return read_weights(folder)
    except FileNotFoundError as e:
        raise ConversionError(str(e)) from None


def floating_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype most weights are stored in."""
    counts: dict[torch.dtype, int] = {}
    for t in state.values():
        if t.is_floating_point():
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def read_model_folder(folder: str | os.PathLike):
    """`(MiniMindConfig, state_dict)` for a MiniMind folder or a plain transformers Qwen3-family folder.

    The state dict uses MiniMind's keys, which are transformers 5's in-memory Qwen3 keys (MoE experts fused).
    transformers writes Qwen3-MoE / Mixtral folders in the Hub's per-expert layout, so those are read through
    transformers itself, which applies its own checkpoint conversion. With tied embeddings `lm_head.weight`
    is left out.
    """
    from .hf import minimind_config_from_hf

    model_type = model_type_of(folder)
    raw = read_config_json(folder)
    if model_type == "minimind":
        from minimind_hf import MiniMindConfig

        config = MiniMindConfig.from_pretrained(os.fspath(folder))
        state = load_state_dict(folder)
    else:
        from transformers import AutoModelForCausalLM

        config = minimind_config_from_hf(raw, source=str(folder))
        model = AutoModelForCausalLM.from_pretrained(os.fspath(folder), dtype="auto", trust_remote_code=False)
        state = {k: v.detach() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return config, state


# --------------------------------------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not force:
        non_empty = target.is_file() or any(target.iterdir())
        if non_empty:
            raise ConversionError(
                f"{target} already exists and is not empty; pass --force (force=True) to replace it"
            )


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `target`; on success it replaces `target` in one rename."""
    target = Path(target).absolute()
    _check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700); give it the usual permissions
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "previous")
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old / "previous", target)  # put the previous output back
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_output_file(target: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside `target`; on success it is renamed onto `target`."""
    target = Path(target).absolute()
    if target.is_dir():
        raise ConversionError(f"{target} is a folder; give a file name (e.g. {target / 'model.gguf'})")
    _check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def has_tokenizer(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()


def copy_tokenizer_files(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Copy whichever tokenizer files `src` has into `dst`; return their names."""
    src, dst = Path(src), Path(dst)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def check_tokenizer_arg(tokenizer: str | os.PathLike | None) -> None:
    """An explicitly given tokenizer folder must hold a tokenizer."""
    if tokenizer is not None and not has_tokenizer(tokenizer):
        raise ConversionError(f"--tokenizer {tokenizer}: no tokenizer.json (or vocab.json) in that folder")


def mark_assistant_tokens(folder: Path) -> None:
    """Give a MiniMind folder's tokenizer the package's chat template when its own renders exactly the same
    but lacks ``{% generation %}`` markers (the original MiniMind's): `train sft` / `dpo` need the markers to
    find the assistant's tokens. Only the template changes (``chat_template.jinja`` and the key in
    ``tokenizer_config.json``); any other template is kept, with a warning."""
    from transformers import AutoTokenizer

    from minimind_hf.tokenizer.template import chat_template, has_generation_markers, renders_like_ours

    if not has_tokenizer(folder):
        return
    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = tokenizer.chat_template
    if not isinstance(template, str) or has_generation_markers(template):
        return
    if not renders_like_ours(tokenizer, template):
        logger.warning(
            "%s: the chat template has no {%% generation %%} markers and renders differently from "
            "MiniMind's, so it is kept as is; `train sft` / `dpo` on this folder need the markers (or "
            "--tokenizer a folder with them)",
            folder,
        )
        return
    ours = chat_template()
    (folder / "chat_template.jinja").write_text(ours, encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if "chat_template" in data:
            data["chat_template"] = ours
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    logger.info(
        "the tokenizer's chat template renders as MiniMind's but had no {%% generation %%} markers: replaced "
        "by the package's (same text, plus the markers SFT needs)"
    )


def write_tokenizer(dst: Path, sources: list[str | os.PathLike | None]) -> str | None:
    """Copy the tokenizer from the first of `sources` that has one; warn when none does."""
    for src in sources:
        if src is not None and has_tokenizer(src):
            copy_tokenizer_files(src, dst)
            return str(src)
    logger.warning(
        "no tokenizer found (looked in %s): the output folder has weights and config only; "
        "pass --tokenizer DIR",
        ", ".join(str(s) for s in sources if s is not None) or "nothing",
    )
    return None
