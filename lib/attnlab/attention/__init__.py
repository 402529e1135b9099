"""Attention: exact backends and efficient variants behind one signature, registered in ATTENTION."""

from . import backends, variants  # noqa: F401  (fills ATTENTION top-down)
from .backends import attention_weights, eager_attention, flex_attention_backend, sdpa_attention
from .base import ATTENTION, Attention, AttentionSpec, AttnDims, build_attention
from .masks import causal_mask, flex_block_mask, mask_padding, materialize_score_mod, padding_bias
from .variants.performer import orthogonal_gaussian

__all__ = [
    "ATTENTION", "Attention", "AttentionSpec", "AttnDims", "build_attention", "eager_attention", "sdpa_attention",
    "attention_weights",
    "flex_attention_backend", "causal_mask", "flex_block_mask", "mask_padding", "materialize_score_mod",
    "padding_bias", "orthogonal_gaussian",
]
