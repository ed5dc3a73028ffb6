"""MiniMind folder -> an Ollama model folder: `model.gguf` + `Modelfile` (+ a README with the commands).

    minimind-hf convert to-ollama runs/quickstart/model out/ollama-minimind --outtype q8_0
    cd out/ollama-minimind && ollama create minimind -f Modelfile && ollama run minimind

The Modelfile has `FROM ./model.gguf`, a Go-template `TEMPLATE` that renders conversations like MiniMind's
Jinja chat template (ChatML, Hermes tools, `<tool_response>` turns, the empty `<think>` block that turns
thinking off), the stop tokens and default sampling parameters. The GGUF also carries the Jinja template
itself (newer Ollama, which runs llama.cpp's Jinja engine, uses it when a Modelfile has no TEMPLATE).
Known differences from the Jinja template, which Go templates cannot express: earlier assistant turns are
rendered with an empty think block (Ollama keeps reasoning out of `.Content`), tool JSON uses Go's compact
encoding, and system messages after the first are merged into the system block by Ollama.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from minimind_hf.modeling_minimind import GENERATION_DEFAULTS

from .folders import ConversionError, atomic_output_dir, read_config_json
from .gguf_export import to_gguf

logger = logging.getLogger(__name__)

STOP_TOKENS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")
# The original MiniMind's chat defaults (eval_llm.py / web demo).
# MiniMind's sampling defaults, used when the folder has no generation_config.json
DEFAULT_PARAMETERS = {
    "temperature": GENERATION_DEFAULTS["temperature"],
    "top_p": GENERATION_DEFAULTS["top_p"],
    "num_ctx": 2048,
}

# Go text/template. Every line that continues an action starts with `{{-` so no stray newlines appear.
# Two raw literals only to keep the source within 110 columns: the value is one string.
OLLAMA_TEMPLATE = (
    r"""{{- if .Tools }}<|im_start|>system
{{ if .System }}{{ .System }}

{{ end }}# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>{{ range .Tools }}
{{ . }}{{ end }}
</tools>

For each function call, return a json object with function name and arguments within """
    r"""<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{{ else if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- $prev := "" }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if and (eq $prev "tool") (ne $m.Role "tool") (ne $m.Role "system") }}<|im_end|>
{{ end }}
{{- if eq $m.Role "user" }}<|im_start|>user
{{ $m.Content }}<|im_end|>
{{ else if eq $m.Role "assistant" }}<|im_start|>assistant
<think>

</think>

{{ $m.Content }}
{{- range $j, $c := $m.ToolCalls }}{{ if or $j $m.Content }}
{{ end }}<tool_call>
{"name": "{{ $c.Function.Name }}", "arguments": {{ $c.Function.Arguments }}}
</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq $m.Role "tool" }}{{ if ne $prev "tool" }}<|im_start|>user{{ end }}
<tool_response>
{{ $m.Content }}
</tool_response>
{{- end }}
{{- if ne $m.Role "system" }}{{ $prev = $m.Role }}{{ end }}
{{- end }}
{{- if eq $prev "tool" }}<|im_end|>
{{ end }}
{{- if ne $prev "assistant" }}<|im_start|>assistant
<think>

</think>

{{ end }}"""
)


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def modelfile_text(
    gguf_name: str = "model.gguf",
    parameters: dict | None = None,
    system: str | None = None,
    template: str = OLLAMA_TEMPLATE,
) -> str:
    """The Modelfile for a GGUF lying beside it."""
    if '"""' in template or (system and '"""' in system):
        raise ConversionError('a Modelfile TEMPLATE/SYSTEM cannot contain """')
    lines = [
        "# MiniMind for Ollama. Create and run it with:",
        "#   ollama create minimind -f Modelfile",
        "#   ollama run minimind",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
    ]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {_quote(tok)}" for tok in STOP_TOKENS]
    for key, value in (parameters or DEFAULT_PARAMETERS).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def _sampling_defaults(src: Path, num_ctx: int | None) -> dict:
    params = dict(DEFAULT_PARAMETERS)
    gen = src / "generation_config.json"
    if gen.is_file():
        cfg = json.loads(gen.read_text(encoding="utf-8"))
        for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
            if cfg.get(key) is not None and cfg.get("do_sample", True):
                params["repeat_penalty" if key == "repetition_penalty" else key] = cfg[key]
    if num_ctx is not None:
        params["num_ctx"] = num_ctx
    else:
        params["num_ctx"] = min(params["num_ctx"], read_config_json(src).get("max_position_embeddings", 2048))
    return params


def to_ollama(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    outtype: str = "q8_0",
    name: str = "minimind",
    system: str | None = None,
    num_ctx: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Write `out/model.gguf`, `out/Modelfile` and `out/README.md` for `ollama create`."""
    src = Path(src)
    params = _sampling_defaults(src, num_ctx)
    with atomic_output_dir(out, force=force) as tmp:
        to_gguf(src, tmp / "model.gguf", outtype=outtype, tokenizer=tokenizer, force=True)
        (tmp / "Modelfile").write_text(modelfile_text("model.gguf", params, system), encoding="utf-8")
        (tmp / "README.md").write_text(
            f"# {name} for Ollama\n\nConverted from `{src}` ({outtype}).\n\n```bash\n"
            f"ollama create {name} -f Modelfile\nollama run {name}\n```\n",
            encoding="utf-8",
        )
    logger.info("wrote %s: run `ollama create %s -f %s`", out, name, Path(out) / "Modelfile")
    return Path(out)
