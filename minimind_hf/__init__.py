"""minimind-hf: MiniMind as a first-class Hugging Face model.

Importing the package registers `model_type="minimind"` with the Auto classes in this process, and marks
the classes for `register_for_auto_class`, so `save_pretrained` writes `auto_map` and copies the model code:
a saved folder then loads anywhere with `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_minimind import PRESETS, MiniMindConfig
from .modeling_minimind import MiniMindForCausalLM, MiniMindModel, MiniMindPreTrainedModel

__version__ = "0.1.0"

AutoConfig.register("minimind", MiniMindConfig, exist_ok=True)
AutoModel.register(MiniMindConfig, MiniMindModel, exist_ok=True)
AutoModelForCausalLM.register(MiniMindConfig, MiniMindForCausalLM, exist_ok=True)

MiniMindConfig.register_for_auto_class()
MiniMindModel.register_for_auto_class("AutoModel")
MiniMindForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "PRESETS",
    "MiniMindConfig",
    "MiniMindForCausalLM",
    "MiniMindModel",
    "MiniMindPreTrainedModel",
    "__version__",
]
