"""The Transformer feed-forward, Linear -> activation -> Linear (Vaswani et al. 2017), with a CPU fast path.

``FeedForward`` is the ``nn.Sequential`` it always was (same parameters, same state-dict names
``0.weight`` ... ``2.bias``); in float32 on the CPU, with a ReLU or exact GELU (Hendrycks & Gimpel 2016)
between, it runs attnlab's compiled kernel (csrc/fused_mlp.cpp): blocks of rows whose hidden activations
stay in cache, so only x, the pre-activation and y cross memory, and the backward forms the gradient of the
hidden layer in cache and uses it for both of its products. Everything else (CUDA, bf16, other activations,
``torch.compile``, a machine without the kernel) runs the module's layers, which stay the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import kernels

ACT_CODES = {nn.ReLU: 0, nn.GELU: 1}  # the activations the kernel computes (GELU: exact, erf)


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, act: int) -> Tensor:  # noqa: ANN001
        keep = any(ctx.needs_input_grad[:5])
        y, h = torch.ops.attnlab_mlp.mlp_forward(x, w1, b1, w2, b2, act, keep)  # (M, d), (M, f)
        ctx.save_for_backward(x, h, w1, w2)
        ctx.act = act
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        x, h, w1, w2 = ctx.saved_tensors
        dx, dw1, db1, dw2, db2 = torch.ops.attnlab_mlp.mlp_backward(dy.contiguous(), x, h, w1, w2, ctx.act)
        return dx, dw1, db1, dw2, db2, None


class FeedForward(nn.Sequential):
    """Linear(d, f) -> activation -> Linear(f, d); float32 CPU: one compiled kernel for all three."""

    fused: bool = True  # False: always the layers (the reference of the kernel)

    def __init__(self, d_model: int, d_ff: int, activation: nn.Module) -> None:
        super().__init__(nn.Linear(d_model, d_ff), activation, nn.Linear(d_ff, d_model))

    def fused_applies(self, x: Tensor) -> bool:
        """Whether the compiled kernel runs on x: float32 CPU, eager, ReLU or exact GELU, biases present."""
        lin1, act, lin2 = self[0], self[1], self[2]
        code = ACT_CODES.get(type(act))
        return (self.fused and code is not None and getattr(act, "approximate", "none") == "none"
                and x.device.type == "cpu" and x.dtype == torch.float32 and lin1.weight.dtype == torch.float32
                and lin1.bias is not None and lin2.bias is not None and not torch.compiler.is_compiling()
                and kernels.available("fused_mlp"))

    def forward(self, x: Tensor) -> Tensor:
        if not self.fused_applies(x):
            return super().forward(x)
        lin1, lin2 = self[0], self[2]
        y = _FusedMLP.apply(x.reshape(-1, x.shape[-1]).contiguous(), lin1.weight, lin1.bias, lin2.weight,
                            lin2.bias, ACT_CODES[type(self[1])])  # (B*T, d)
        return y.view(*x.shape[:-1], y.shape[-1])


__all__ = ["FeedForward"]
