"""CPU fast path of the model's exact attention: q, k, v of the fused projection, rotated, biased and
attended in one autograd function.

``SelfAttention`` with the ``sdpa`` backend, float32 on the CPU, no padding and no query-dependent bias
runs one kernel on the (B, T, 3, H, D) projection and returns one (B, T, 3, H, D) gradient:

- attnlab's compiled kernel (csrc/small_attention.cpp), for sequences up to ``SMALL_T``: per (batch, head)
  pair, q and k turned in cache (RoFormer eq. 34, pairs as ``positional.rotate_qk``), v read in place, an
  additive bias (H, T, T) -- ALiBi, T5, KERPLE, FIRE -- added to the scores and given its gradient, causal
  row blocks, only the log-sum-exp kept for the backward (Dao et al. 2022). About 1.6x faster than
  PyTorch's flash kernel at T = 128 (forward and backward), where its many small products dominate.
- else (longer sequences, or no kernel built on this machine) PyTorch's CPU flash-attention kernel, the one
  ``F.scaled_dot_product_attention`` picks there, on views: v read in place, q and k turned into one
  (B, T, 2, H, D) buffer; this one gives the composed path's bits, and takes no bias.

The composed path (``rotate_qkv``, ``permute``, the backend) stays the path for everything else (other
backends, padding, Shaw's bias, CUDA, bf16, learned tables, ``torch.compile``) and the reference of this one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import kernels

# longest sequence for attnlab's kernel, causal and not: it beats the flash kernel up to here on a 2-core CPU
# (forward, T = 512: 4.5 vs 6.6 ms causal, 6.8 vs 6.6 ms not; T = 2048: 14.3 vs 14.8 ms causal)
SMALL_T = {True: 1024, False: 512}
_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def small_kernel_applies(seq_len: int, head_dim: int, causal: bool) -> bool:
    """Whether the fused path runs attnlab's compiled kernel (else PyTorch's flash kernel)."""
    return seq_len <= SMALL_T[causal] and head_dim % 2 == 0 and kernels.available("small_attention")


def fused_qkv_applies(qkv: Tensor, rotation: Tensor | None, bias: Tensor | None = None, causal: bool = True) -> bool:
    """Whether `fused_qkv_attention` may run on this projection (float32 CPU eager, fixed tables; a bias
    (H, T, T) only where attnlab's kernel runs)."""
    b, t, _, h, d = qkv.shape
    return (_FLASH is not None and _FLASH_BACKWARD is not None and qkv.device.type == "cpu"
            and qkv.dtype == torch.float32 and not torch.compiler.is_compiling()
            and (rotation is None or (rotation.dtype == torch.float32 and not rotation.requires_grad))
            and (bias is None or (bias.shape == (h, t, t) and bias.dtype == torch.float32
                                  and bias.device.type == "cpu" and small_kernel_applies(t, d, causal))))


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
    def forward(ctx, qkv: Tensor, table: Tensor | None, bias: Tensor | None, scale: float,  # noqa: ANN001
                causal: bool) -> Tensor:
        b, t, _, h, d = qkv.shape
        ctx.scale, ctx.causal, ctx.small = scale, causal, small_kernel_applies(t, d, causal)
        if ctx.small:  # q, k turned inside the kernel
            tab = None if table is None else table.reshape(t, 2, d // 2, 2).contiguous()  # (T, 2, D/2, 2)
            bias = None if bias is None else bias.contiguous()  # (H, T, T)
            out, lse = torch.ops.attnlab.small_attention_forward(qkv, tab, bias, scale, causal)  # (B,H,T,D), (B,H,T)
            ctx.save_for_backward(qkv, tab, bias, out, lse)
            return out
        if bias is not None:
            raise ValueError("fused_qkv_attention: a bias needs attnlab's compiled kernel (see fused_qkv_applies)")
        if table is not None:
            turns = _turns(table, h)  # (T, 2, H, D/2) complex
            qk = torch.empty(b, t, 2, h, d, dtype=qkv.dtype)  # (B, T, 2, H, D)
            torch.mul(_pairs(qkv[:, :, :2]), turns, out=_pairs(qk))
        else:
            turns, qk = None, qkv[:, :, :2]
        q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)  # (B, H, T, D)
        out, lse = _FLASH(q, k, v, 0.0, causal, scale=scale)  # (B, H, T, D), (B, H, T)
        ctx.save_for_backward(q, k, v, out, lse, turns)
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        g = g if g.stride(-1) == 1 else g.contiguous()  # the kernels read rows of D; (B, T, H, D) strides are fine
        if ctx.small:
            qkv, tab, bias, out, lse = ctx.saved_tensors
            bias_grad = bias is not None and ctx.needs_input_grad[2]
            grad, dbias = torch.ops.attnlab.small_attention_backward(g, qkv, tab, bias, out, lse, ctx.scale,
                                                                     ctx.causal, bias_grad)
            return grad, None, dbias if bias_grad else None, None, None  # (B, T, 3, H, D), (H, T, T)
        q, k, v, out, lse, turns = ctx.saved_tensors
        b, h, t, d = q.shape
        grad = torch.empty(b, t, 3, h, d, dtype=q.dtype)  # (B, T, 3, H, D)
        dq, dk, dv = _FLASH_BACKWARD(g, q, k, v, out, lse, 0.0, ctx.causal, scale=ctx.scale)
        for i, dx in enumerate((dq, dk)):
            if turns is None:
                grad[:, :, i] = dx.transpose(1, 2)
            else:  # the adjoint of a product by z is a product by conj(z)
                torch.mul(_pairs(dx.transpose(1, 2)), turns[:, i].conj(), out=_pairs(grad[:, :, i]))
        grad[:, :, 2] = dv.transpose(1, 2)
        return grad, None, None, None, None


def fused_qkv_attention(qkv: Tensor, rotation: Tensor | None, scale: float, causal: bool,
                        bias: Tensor | None = None) -> Tensor:
    """Softmax attention (Vaswani et al. 2017) of a fused projection qkv (B, T, 3, H, D), q and k turned by
    `positional.pair_table` and an additive bias (H, T, T) when given, by attnlab's compiled kernel or
    PyTorch's CPU flash kernel (Dao et al. 2022): (B, H, T, D)."""
    if not fused_qkv_applies(qkv, rotation, bias, causal):
        raise ValueError("fused_qkv_attention: float32 CPU tensors, a fixed float32 table and a bias (H, T, T) "
                         "only where attnlab's kernel runs (see fused_qkv_applies)")
    return _FusedQKVAttention.apply(qkv, rotation, bias, scale, causal)


__all__ = ["SMALL_T", "fused_qkv_applies", "fused_qkv_attention", "small_kernel_applies"]
