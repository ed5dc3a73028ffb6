"""to-qwen3 output under transformers 4.x (issue 14 C): what the original MiniMind pins (4.57) and many vLLM
installs carry. 4.x ignores transformers 5's ``rope_parameters`` (``rope_theta`` fell back to 10000: logits
off by 0.2) and reads Qwen3-MoE's expert count as ``num_experts`` (it built 128 experts).

Two checks: the config fields 4.x reads (always), and the real thing: transformers 4.57.3 installed into a
throw-away folder (pip, cached between runs) loads each export in a subprocess and its logits are compared
with ours. That one is skipped, with the reason, when pip cannot reach the package index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from convert_helpers import load_minimind
from minimind_hf.convert import to_qwen3

from minimind_hf import MiniMindConfig, MiniMindForCausalLM

pytestmark = pytest.mark.slow  # a transformers 4.57 interpreter in a subprocess

CASES = {
    "dense": {},
    "yarn": {"inference_rope_scaling": True},
    "moe": {"use_moe": True, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 96},
}
TF4 = "transformers==4.57.3"
TF4_DIR = Path(tempfile.gettempdir()) / "minimind_hf_transformers_4_57"


@pytest.fixture(scope="module")
def exports(tokenizer_dir, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """(MiniMind folder, its to-qwen3 export) per case, random weights (every parameter matters)."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("tf4")
    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    out = {}
    for name, overrides in CASES.items():
        torch.manual_seed(0)
        model = MiniMindForCausalLM(MiniMindConfig.from_preset("tiny", vocab_size=vocab, **overrides))
        src = root / f"mm_{name}"
        model.save_pretrained(src)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(src)
        out[name] = (src, to_qwen3(src, root / f"q3_{name}"))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_the_fields_transformers_4_reads(exports, name):
    src, exported = exports[name]
    config = json.loads((exported / "config.json").read_text(encoding="utf-8"))
    ours = MiniMindConfig.from_pretrained(src)
    # 4.57's Qwen3Config / Qwen3MoeConfig.__init__(rope_theta=10000.0, rope_scaling=None, num_experts=128,
    # ...)
    assert (
        config["rope_theta"] == ours.rope_parameters["rope_theta"] == config["rope_parameters"]["rope_theta"]
    )
    if name == "yarn":
        assert config["rope_scaling"] == {k: v for k, v in ours.rope_parameters.items() if k != "rope_theta"}
        assert config["rope_scaling"]["rope_type"] == "yarn"
    else:
        assert "rope_scaling" not in config
    if name == "moe":
        assert config["num_experts"] == config["num_local_experts"] == ours.num_experts


def _install_transformers_4() -> str | None:
    """Install transformers 4.57 (and the hub/tokenizers it needs) into TF4_DIR once; None, or why not."""
    if (TF4_DIR / ".complete").is_file():
        return None
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--target", str(TF4_DIR), TF4,
           "huggingface-hub>=0.34,<1.0", "tokenizers>=0.22,<0.23"]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"pip could not install {TF4}: {err}"
    if done.returncode != 0:
        return f"pip could not install {TF4} (no package index?): {done.stderr.strip()[-300:]}"
    (TF4_DIR / ".complete").write_text("ok", encoding="utf-8")
    return None


_TF4_SCRIPT = """
import sys, torch, transformers
from transformers import AutoModelForCausalLM
assert transformers.__version__.startswith("4."), transformers.__version__
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(ids).logits, sys.argv[3])
print(type(model).__name__)
"""


@pytest.mark.parametrize("name", list(CASES))
def test_transformers_4_57_computes_our_logits(exports, name, tmp_path):
    if (why := _install_transformers_4()) is not None:
        pytest.skip(why)
    src, exported = exports[name]
    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    torch.save(ids, tmp_path / "ids.pt")
    env = {**os.environ, "PYTHONPATH": str(TF4_DIR), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _TF4_SCRIPT, str(exported), str(tmp_path / "ids.pt"),
         str(tmp_path / "out.pt")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("Qwen3MoeForCausalLM" if name == "moe" else "Qwen3ForCausalLM")
    with torch.no_grad():
        ours = load_minimind(src)(ids).logits
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), ours, atol=1e-4, rtol=0)
