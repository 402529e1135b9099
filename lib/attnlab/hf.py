"""Pretrained transformers causal LMs: where a model comes from, RoPE scaling through its own config, and
a small byte-level `LlamaForCausalLM` trained here.

A model spec is `local` (a byte-level Llama trained on the workbook's corpus, saved with
`save_pretrained` and read back with `from_pretrained`: the real loading path) or `hf:NAME_OR_PATH`
(a folder with a config.json, or a hub name, taken from the local Hugging Face cache, or from the hub
when it can be reached). RoPE context extension sets transformers' own `rope_parameters`
(`linear`, `dynamic`, `yarn`, `llama3`); nothing of it is re-implemented here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .model import masked_cross_entropy
from .passkey import Codec, byte_codec
from .positional.rope_scaling import rope_parameters

METHODS = ("rope", "linear", "dynamic", "yarn", "llama3")  # rope: the model's own RoPE, unscaled


def spec_problem(spec: str) -> str:
    """Why `spec` cannot name a model, checked without loading it ('' when it can)."""
    if spec == "local":
        return ""
    if not spec.startswith("hf:") or not spec[3:]:
        return f"model = {spec!r}: valid choices: local, hf:NAME_OR_PATH"
    return ""


def resolve(spec: str) -> str:
    """The folder or hub name to load for `spec`; ConfigError (one line) when it is neither a local folder,
    nor in the local Hugging Face cache, nor reachable on the hub -- before any work starts."""
    if (why := spec_problem(spec)):
        raise ConfigError(why)
    name = spec[3:]
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ConfigError(f"model = {spec!r}: the folder has no config.json (save it with save_pretrained)")
        return str(path)
    if path.suffix or name.startswith((".", "/", "~")):
        raise ConfigError(f"model = {spec!r}: no such folder")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 -- not cached; is the hub reachable?
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise ConfigError(f"model = {spec!r}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    from huggingface_hub import model_info

    try:
        model_info(name, timeout=10)
    except Exception as e:  # noqa: BLE001 -- offline, unknown name or gated
        raise ConfigError(f"model = {spec!r}: not in the local Hugging Face cache and the hub cannot be reached "
                          f"or does not have it ({type(e).__name__})") from None
    return name


class CausalLM(nn.Module):
    """A transformers causal LM with the workbook's model interface: logits (B, T, V) of tokens (B, T)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        pos = None if positions is None else positions[None].expand(tokens.shape[0], -1)
        return self.hf(input_ids=tokens, position_ids=pos, use_cache=False).logits  # (B, T, V)

    def loss(self, tokens: Tensor, targets: Tensor, positions: Tensor | None = None,
             mask: Tensor | None = None) -> Tensor:
        return masked_cross_entropy(self(tokens, positions), targets, mask)

    @property
    def config(self) -> Any:
        return self.hf.config


def byte_llama_config(d_model: int, n_layers: int, n_heads: int, d_ff: int, max_len: int,
                      theta: float = 10000.0) -> Any:
    """The LlamaConfig of a byte-level model (vocabulary 256) trained at `max_len` tokens."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=256, hidden_size=d_model, intermediate_size=d_ff, num_hidden_layers=n_layers,
                       num_attention_heads=n_heads, num_key_value_heads=n_heads, max_position_embeddings=max_len,
                       rope_parameters={"rope_type": "default", "rope_theta": theta}, tie_word_embeddings=False,
                       bos_token_id=None, eos_token_id=None, pad_token_id=None)


def train_byte_llama(config: Any, folder: Path, train_fn: Callable[[nn.Module, Path], Any]) -> Path:
    """Train a `LlamaForCausalLM` of `config` with `train_fn(model, checkpoint)` unless `folder` already holds
    it; saved with `save_pretrained` (atomically: a finished folder is complete). Returns the folder."""
    from transformers import LlamaForCausalLM

    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.with_name(folder.name + ".work")
    work.mkdir(exist_ok=True)  # its checkpoint resumes an interrupted training
    model = CausalLM(LlamaForCausalLM(config))
    train_fn(model, work / "checkpoint.pt")
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))  # unique: runs may share the cache
    model.hf.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another run finished the same model first: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return folder


def load(source: str, method: str = "rope", factor: float = 1.0, original: int | None = None
         ) -> tuple[CausalLM, Codec]:
    """The model at `source` (a folder or a hub name) through `AutoModelForCausalLM.from_pretrained`, with
    RoPE scaling `method` by `factor` over `original` positions (default: its max_position_embeddings) set in
    its config's `rope_parameters`; and its codec (bytes for a byte-level model, else its tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if method not in METHODS:
        raise ConfigError(f"method = {method!r}: valid choices: {', '.join(METHODS)}")
    config = AutoConfig.from_pretrained(source)
    rp = getattr(config, "rope_parameters", None)
    if not isinstance(rp, dict) or "rope_theta" not in rp:
        raise ConfigError(f"model = {source!r}: its config carries no RoPE parameters (rope_parameters)")
    if rp.get("rope_type", "default") != "default" and method != "rope":
        raise ConfigError(f"model = {source!r}: already scaled ({rp.get('rope_type')}); only method rope applies")
    original = original or int(config.max_position_embeddings)
    if method != "rope":
        params, max_pos = rope_parameters(method, float(rp["rope_theta"]), max(1.0, factor), original)
        config.rope_parameters = params
        config.max_position_embeddings = max_pos
    model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32)
    model.eval()
    return CausalLM(model), codec_of(source, int(config.vocab_size))


def codec_of(source: str, vocab_size: int) -> Codec:
    """Bytes for a byte-level model without a tokenizer; else the model's own tokenizer (no special tokens)."""
    if vocab_size == 256 and not (Path(source) / "tokenizer_config.json").exists():
        return byte_codec
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    return lambda text: tok(text, add_special_tokens=False)["input_ids"]
