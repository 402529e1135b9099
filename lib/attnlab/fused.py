"""CPU fast path of the model's exact attention: q, k, v of the fused projection, rotated and attended in
one autograd function.

``SelfAttention`` with the ``sdpa`` backend, float32 on the CPU and no bias, mask or padding, calls
PyTorch's CPU flash-attention kernel -- the kernel ``F.scaled_dot_product_attention`` itself picks there
(Dao et al. 2022) -- on views of the (B, T, 3, H, D) projection: v is read in place, q and k are turned
(RoFormer eq. 34, pairs as ``positional.rotate_qk``) into one (B, T, 2, H, D) buffer, and the backward
writes the kernel's dq, dk (turned back) and dv into one (B, T, 3, H, D) gradient. The composed path
(``rotate_qkv``, ``permute``, ``F.scaled_dot_product_attention``) computes the same bits with one copy of v
forward and a stack of (dq, dk, dv) backward more; it stays the path for everything else (other backends,
biases, CUDA, bf16, learned tables, ``torch.compile``) and the reference of this one.
"""

from __future__ import annotations

import torch
from torch import Tensor

_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def fused_qkv_applies(qkv: Tensor, rotation: Tensor | None) -> bool:
    """Whether `fused_qkv_attention` may run on this projection (float32 CPU eager, fixed tables)."""
    return (_FLASH is not None and _FLASH_BACKWARD is not None and qkv.device.type == "cpu"
            and qkv.dtype == torch.float32 and not torch.compiler.is_compiling()
            and (rotation is None or (rotation.dtype == torch.float32 and not rotation.requires_grad)))


def _pairs(x: Tensor) -> Tensor:
    """x (..., D) with even strides as D/2 complex numbers (x_2i + i x_2i+1), a view."""
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def _turns(table: Tensor, heads: int) -> Tensor:
    """`positional.pair_table` (T, 2, 1, D/2, 2) as complex turns (T, 2, H, D/2), contiguous: every operand of
    the products below then runs over (2, H, D/2) as one contiguous inner loop."""
    t = torch.view_as_complex(table.contiguous())
    return t.expand(t.shape[0], 2, heads, t.shape[-1]).contiguous()


class _FusedQKVAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: Tensor, table: Tensor | None, scale: float, causal: bool) -> Tensor:  # noqa: ANN001
        b, t, _, h, d = qkv.shape
        if table is not None:
            turns = _turns(table, h)  # (T, 2, H, D/2) complex
            qk = torch.empty(b, t, 2, h, d, dtype=qkv.dtype)  # (B, T, 2, H, D)
            torch.mul(_pairs(qkv[:, :, :2]), turns, out=_pairs(qk))
        else:
            turns, qk = None, qkv[:, :, :2]
        q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)  # (B, H, T, D)
        out, lse = _FLASH(q, k, v, 0.0, causal, scale=scale)  # (B, H, T, D), (B, H, T)
        ctx.save_for_backward(q, k, v, out, lse, turns)
        ctx.scale, ctx.causal = scale, causal
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None, None]:  # noqa: ANN001
        q, k, v, out, lse, turns = ctx.saved_tensors
        g = g if g.stride(-1) == 1 else g.contiguous()  # the kernel reads rows of D; (B, T, H, D) strides are fine
        dq, dk, dv = _FLASH_BACKWARD(g, q, k, v, out, lse, 0.0, ctx.causal, scale=ctx.scale)
        b, h, t, d = q.shape
        grad = torch.empty(b, t, 3, h, d, dtype=q.dtype)  # (B, T, 3, H, D)
        for i, dx in enumerate((dq, dk)):
            if turns is None:
                grad[:, :, i] = dx.transpose(1, 2)
            else:  # the adjoint of a product by z is a product by conj(z)
                torch.mul(_pairs(dx.transpose(1, 2)), turns[:, i].conj(), out=_pairs(grad[:, :, i]))
        grad[:, :, 2] = dv.transpose(1, 2)
        return grad, None, None, None


def fused_qkv_attention(qkv: Tensor, rotation: Tensor | None, scale: float, causal: bool) -> Tensor:
    """Softmax attention (Vaswani et al. 2017) of a fused projection qkv (B, T, 3, H, D), q and k turned by
    `positional.pair_table` when given, by PyTorch's CPU flash kernel (Dao et al. 2022): (B, H, T, D)."""
    if not fused_qkv_applies(qkv, rotation):
        raise ValueError("fused_qkv_attention: float32 CPU tensors and a fixed float32 table only "
                         "(see fused_qkv_applies)")
    return _FusedQKVAttention.apply(qkv, rotation, scale, causal)


__all__ = ["fused_qkv_applies", "fused_qkv_attention"]
