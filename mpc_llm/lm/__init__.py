"""Everything Hugging Face, in one layer: loading, prompts, the decode engine, architecture adapters.

- `load_model` / `load_default_model` / `DEFAULT_MODEL`: hub ids, local folders, GGUF files and the
  embedded SmolLM2-135M-Instruct (`mpc_llm.lm.loading`, `mpc_llm.lm.gguf`, `mpc_llm.lm.hub`);
- `Prompt`, `render_prompt`, `to_messages`, `is_messages`: prompts and chat encoding
  (`mpc_llm.lm.prompts`);
- `DecodeEngine`, `LMConfig`: prefill, cache expansion, the pre-logit control hook and sampling
  (`mpc_llm.lm.engine`, `mpc_llm.lm.cache`, `mpc_llm.lm.sampling`);
- `resolve_dtype`, `auto_dtype`, `native_bfloat16`: the dtype a model runs in, ``"auto"`` being
  bfloat16 where the device computes it natively (`mpc_llm.lm.precision`);
- `ModelAdapter`, `ARCHITECTURES`: the per-family quirks, declared in one table
  (`mpc_llm.lm.adapters`);
- `LMRollout`: what a decode returns to a controller.

`LMDynamics` (`mpc_llm.dynamics`) and the model-based rewards (`mpc_llm.rewards`) are built on this
layer. Importing it does not import transformers; loading a model does.
"""

from mpc_llm.lm.adapters import ARCHITECTURES, Architecture, ModelAdapter
from mpc_llm.lm.config import LMConfig
from mpc_llm.lm.engine import Decoded, DecodeEngine, Prefix
from mpc_llm.lm.hub import load_pretrained, model_device, resolve_tokenizer
from mpc_llm.lm.loading import (
    DEFAULT_MODEL,
    default_model_path,
    is_cache_warm,
    load_default_model,
    load_default_tokenizer,
    load_model,
)
from mpc_llm.lm.precision import auto_dtype, check_dtype, dtype_name, native_bfloat16, resolve_dtype
from mpc_llm.lm.prompts import Prompt, is_messages, render_prompt, to_messages
from mpc_llm.lm.rollout import LMRollout

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "Architecture",
    "DecodeEngine",
    "Decoded",
    "LMConfig",
    "LMRollout",
    "ModelAdapter",
    "Prefix",
    "Prompt",
    "auto_dtype",
    "check_dtype",
    "default_model_path",
    "dtype_name",
    "is_cache_warm",
    "is_messages",
    "load_default_model",
    "load_default_tokenizer",
    "load_model",
    "load_pretrained",
    "model_device",
    "native_bfloat16",
    "render_prompt",
    "resolve_dtype",
    "resolve_tokenizer",
    "to_messages",
]
