"""Acceptance test: a saved MiniMind folder works with plain transformers and `trust_remote_code=True`.

The folder (weights + copied model code + tokenizer) is loaded in a fresh interpreter where `minimind_hf`
cannot be imported (it is installed editable here, so the child blocks it through `sys.modules`). The
child reports logits, generated ids, pipeline text and chat-template output as JSON; the parent compares
them with the in-process model.
"""

import ast
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

import minimind_hf  # noqa: F401
from minimind_hf import MiniMindConfig, MiniMindForCausalLM

pytestmark = pytest.mark.slow  # fresh interpreters load the saved folders

FIXED_IDS = [1, 40, 77, 123, 250, 99, 300, 41, 2, 60]
PROMPT = "你好，世界! MiniMind"
CHAT = [{"role": "user", "content": "你好"}]
NUM_RESERVED = 36  # MiniMind's reserved/special ids 0..35 (suppressed so the pipeline text is never empty)

CHILD = r"""
import json, sys
sys.modules["minimind_hf"] = None  # the package is installed editable: make it un-importable here
try:
    import minimind_hf  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("minimind_hf is still importable in the child")

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, pipeline

folder, fixed_ids, prompt, chat, num_reserved = (
    sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
)

config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(folder)

ids = torch.tensor([fixed_ids])
with torch.no_grad():
    logits = model(ids, use_cache=False).logits[0]

# AutoModel (the bare decoder) separately, so a failure there is reported without hiding the rest.
base_class, base_error, hidden = None, None, None
try:
    base = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    base_class = f"{type(base).__module__}.{type(base).__qualname__}"
    with torch.no_grad():
        hidden = base(ids, use_cache=False).last_hidden_state[0].tolist()
except Exception as exc:
    base_error = f"{type(exc).__name__}: {str(exc)[:300]}"
generated = model.generate(ids, max_new_tokens=6, do_sample=False)[0].tolist()

pipe = pipeline("text-generation", model=model, tokenizer=tok)
text = pipe(
    prompt, max_new_tokens=6, do_sample=False, suppress_tokens=list(range(num_reserved))
)[0]["generated_text"]

chat_text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
enc = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True, return_tensors="pt")
chat_out = model.generate(**enc, max_new_tokens=4, do_sample=False)[0].tolist()

print("@@RESULT@@" + json.dumps({
    "config_class": f"{type(config).__module__}.{type(config).__qualname__}",
    "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
    "base_class": base_class,
    "base_error": base_error,
    "minimind_modules": sorted(
        m for m, v in sys.modules.items() if m.startswith("minimind_hf") and v is not None
    ),
    "use_moe": config.use_moe,
    "logits": logits.tolist(),
    "hidden": hidden,
    "generated": generated,
    "pipeline_text": text,
    "chat_text": chat_text,
    "chat_ids": enc["input_ids"][0].tolist(),
    "chat_out": chat_out,
}), flush=True)
"""


VARIANTS = {
    "dense": {},
    "moe": dict(use_moe=True, num_experts=4, num_experts_per_tok=1),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def saved(request, tiny_tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"minimind_{request.param}")
    torch.manual_seed(0)
    config = MiniMindConfig.from_preset(
        "tiny", vocab_size=len(tiny_tokenizer), initializer_range=0.2, **VARIANTS[request.param]
    )
    model = MiniMindForCausalLM(config).eval()
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return request.param, folder, model


def run_child(folder, tmp_path) -> dict:
    """Run CHILD in a clean interpreter (cwd = the folder, no PYTHONPATH, offline) and parse its JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        TOKENIZERS_PARALLELISM="false",
    )
    args = [
        sys.executable,
        "-c",
        CHILD,
        str(folder),
        json.dumps(FIXED_IDS),
        PROMPT,
        json.dumps(CHAT, ensure_ascii=False),
        str(NUM_RESERVED),
    ]
    proc = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"child failed:\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    )
    marker = "@@RESULT@@"
    assert marker in proc.stdout, (
        f"no result from child:\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    )
    return json.loads(proc.stdout.rsplit(marker, 1)[1].splitlines()[0])


def test_saved_folder_has_auto_map_and_code(saved):
    _, folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "minimind"
    auto_map = config["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_minimind.MiniMindConfig"
    assert auto_map["AutoModel"] == "modeling_minimind.MiniMindModel"
    assert auto_map["AutoModelForCausalLM"] == "modeling_minimind.MiniMindForCausalLM"
    for name in (
        "modeling_minimind.py",
        "configuration_minimind.py",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (folder / name).is_file(), name
    # The copied code must not depend on the package.
    for name in ("modeling_minimind.py", "configuration_minimind.py"):
        tree = ast.parse((folder / name).read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
        assert not [m for m in imported if m.split(".")[0] == "minimind_hf"], (name, imported)


@pytest.fixture(scope="module")
def child(saved, tmp_path_factory):
    _, folder, _ = saved
    return run_child(folder, tmp_path_factory.mktemp("child"))


def test_remote_code_causal_lm_in_clean_process(saved, child):
    variant, _, model = saved
    assert child["minimind_modules"] == []
    for key in ("config_class", "model_class"):
        assert child[key].startswith("transformers_modules."), child[key]
        assert "minimind_hf" not in child[key]
    assert child["model_class"].endswith("modeling_minimind.MiniMindForCausalLM")
    assert child["config_class"].endswith("configuration_minimind.MiniMindConfig")
    assert child["use_moe"] is (variant == "moe")

    ids = torch.tensor([FIXED_IDS])
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits[0]
    torch.testing.assert_close(torch.tensor(child["logits"]), expected, atol=1e-5, rtol=1e-5)
    assert child["generated"] == model.generate(ids, max_new_tokens=6, do_sample=False)[0].tolist()


def test_remote_code_auto_model_in_clean_process(saved, child):
    _, _, model = saved
    assert child["base_error"] is None, (
        f"AutoModel.from_pretrained(trust_remote_code=True) failed: {child['base_error']}"
    )
    assert child["base_class"].startswith("transformers_modules.")
    assert child["base_class"].endswith("modeling_minimind.MiniMindModel")
    ids = torch.tensor([FIXED_IDS])
    with torch.no_grad():
        expected = model.model(ids, use_cache=False).last_hidden_state[0]
    torch.testing.assert_close(torch.tensor(child["hidden"]), expected, atol=1e-5, rtol=1e-5)


def test_remote_code_pipeline_and_chat_in_clean_process(saved, child, tiny_tokenizer):
    _, _, model = saved

    pipe = pipeline("text-generation", model=model, tokenizer=tiny_tokenizer)
    expected_text = pipe(PROMPT, max_new_tokens=6, do_sample=False, suppress_tokens=list(range(NUM_RESERVED)))
    text = child["pipeline_text"]
    assert isinstance(text, str) and text.startswith(PROMPT) and len(text) > len(PROMPT)
    assert text == expected_text[0]["generated_text"]

    expected_chat = tiny_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert child["chat_text"] == expected_chat
    assert child["chat_text"].startswith("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    assert child["chat_ids"] == tiny_tokenizer(expected_chat, add_special_tokens=False)["input_ids"]
    n = len(child["chat_ids"])
    assert child["chat_out"][:n] == child["chat_ids"] and len(child["chat_out"]) > n
    chat_expected = model.generate(torch.tensor([child["chat_ids"]]), max_new_tokens=4, do_sample=False)[
        0
    ].tolist()
    assert child["chat_out"] == chat_expected


def test_reload_in_process_matches(saved, tiny_tokenizer):
    _, folder, model = saved
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(reloaded) is MiniMindForCausalLM
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok(PROMPT)["input_ids"] == tiny_tokenizer(PROMPT)["input_ids"]
    assert tok.chat_template == tiny_tokenizer.chat_template
    ids = torch.tensor([FIXED_IDS])
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(ids, use_cache=False).logits, model(ids, use_cache=False).logits, atol=1e-6, rtol=1e-6
        )
