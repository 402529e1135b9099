"""The training loop: AdamW, warm-up + cosine, clipping, checkpoints, resume, NaN guard, cache.

One loop serves every notebook: it takes a model and a ``batch_fn(step, generator) ->
(inputs, targets, mask)``. A run killed at any point and started again resumes from its last
checkpoint (model, optimizer, RNG states) and ends with the same weights as an uninterrupted
run. Checkpoints are plain tensors and numbers, loaded with ``torch.load(weights_only=True)``;
every write is atomic.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from .config import Config, to_dict
from .io import atomic_write_bytes, atomic_write_json, read_json

BatchFn = Callable[[int, torch.Generator], tuple[Tensor, Tensor, Tensor | None]]
CACHE_VERSION = 10  # bump when the model or the loop changes what a config trains to


class TrainConfig(Config):
    """Optimisation: AdamW (Loshchilov & Hutter 2019), linear warm-up then cosine (or rsqrt, as LRA) decay."""

    steps: int = Field(600, ge=1)
    batch_size: int = Field(32, ge=1)
    seq_len: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup: int = Field(50, ge=0)
    schedule: Literal["cosine", "rsqrt"] = Field("cosine", description="decay after warm-up: cosine to "
                                                 "lr * min_lr_ratio, or lr * sqrt(warmup / step) (LRA's)")
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    seed: int = Field(0, ge=0)
    checkpoint_every: int = Field(200, ge=1)
    compile: bool = False
    time_budget_s: float = Field(0.0, ge=0, description="stop early after this many seconds (0: none)")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a training run did."""

    steps: int
    losses: list[float] = field(default_factory=list)
    tokens_per_s: float = float("nan")
    step_time_s: float = float("nan")  # median seconds per step (after warm-up steps)
    wall_s: float = 0.0
    status: str = "completed"  # completed | failed | time budget
    error: str | None = None
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "final_loss": self.losses[-1] if self.losses else None,
                "tokens_per_s": self.tokens_per_s, "step_time_s": self.step_time_s, "wall_s": self.wall_s,
                "status": self.status, "error": self.error, "resumed_from": self.resumed_from,
                "losses": self.losses}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * min_lr_ratio (or rsqrt decay)."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "rsqrt":
        return cfg.lr * math.sqrt(max(1, cfg.warmup) / max(1, step, cfg.warmup))
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with weight decay on matrices only (not on norms, biases, gains), in
    torch's default implementation; `fused` takes its fused kernel instead (`attnlab bench ablate`: within
    noise of the default, under 5% of the step, so the trainer does not)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=True if fused else None)


def _save_checkpoint(path: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer,
                     gen: torch.Generator, losses: list[float], step_times: list[float]) -> None:
    state = {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "losses": losses,
             "step_times": step_times}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


LossFn = Callable[..., Tensor]


class TrainStep:
    """One optimisation step -- loss, backward, gradient clipping, AdamW update (Loshchilov & Hutter 2019).

    The trainer and ``attnlab bench train`` run this same step. With ``compile`` the loss (forward and
    backward, through AOTAutograd) and the update (clipping and AdamW) are compiled separately; the
    learning rate then lives in a tensor per parameter group so that the schedule does not recompile.
    """

    def __init__(self, loss_fn: LossFn, params: list[nn.Parameter], opt: torch.optim.Optimizer,
                 grad_clip: float = 0.0, compile: bool = False,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> None:
        self.params, self.opt, self.grad_clip, self.compiled = params, opt, grad_clip, compile
        self.autocast = autocast  # around the forward pass only (bf16 on CUDA)
        self.loss_fn = torch.compile(loss_fn) if compile else loss_fn
        if compile:
            for g in opt.param_groups:
                g["lr"] = torch.tensor(float(g["lr"]))
        self._update = torch.compile(self._clip_and_step) if compile else self._clip_and_step

    def _clip_and_step(self) -> None:
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()

    def set_lr(self, lr: float) -> None:
        """The learning rate of every parameter group (in place when compiled)."""
        for g in self.opt.param_groups:
            if isinstance(g["lr"], Tensor):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr

    def __call__(self, *args: Any, lr: float | None = None, **kwargs: Any) -> Tensor:
        """The loss of this batch (detached), after the update; a non-finite loss raises before any update."""
        if lr is not None:
            self.set_lr(lr)
        with self.autocast():
            loss = self.loss_fn(*args, **kwargs)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"non-finite loss ({loss.detach().item()})")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self._update()
        return loss.detach()


def train(model: nn.Module, batch_fn: BatchFn, cfg: TrainConfig, *, checkpoint: Path | None = None,
          progress: bool = True, desc: str = "train", device: str | torch.device | None = None) -> TrainResult:
    """Train `model` for cfg.steps (resuming from `checkpoint` if present); never a silent NaN."""
    from tqdm.auto import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).train()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    start, losses, step_times = 0, [], []
    if checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start, losses, step_times = int(state["step"]), list(state["losses"]), list(state["step_times"])
    result = TrainResult(steps=start, losses=losses, resumed_from=start)
    autocast = (partial(torch.autocast, "cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext)
    step_fn = TrainStep(model.loss, [p for p in model.parameters() if p.requires_grad], opt, cfg.grad_clip,
                        compile=cfg.compile, autocast=autocast)
    t_begin = time.time()
    bar = tqdm(range(start, cfg.steps), desc=desc, initial=start, total=cfg.steps, disable=not progress,
               mininterval=1.0, leave=False)
    tokens_per_step = None
    for step in bar:
        t0 = time.perf_counter()
        x, y, mask = batch_fn(step, gen)
        x, y = x.to(device), y.to(device)
        mask = mask.to(device) if mask is not None else None
        tokens_per_step = int(mask.sum()) if mask is not None else x.numel()
        try:
            loss = step_fn(x, y, mask=mask, lr=lr_at(step, cfg))
        except TrainingDiverged as e:
            result.status, result.error = "failed", f"{e} at step {step}"
            bar.close()
            raise TrainingDiverged(result.error) from None
        losses.append(loss.item())
        step_times.append(time.perf_counter() - t0)
        result.steps = step + 1
        if progress and (step % 10 == 0 or step + 1 == cfg.steps):
            recent = step_times[-20:]
            bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{x.numel() / (sum(recent) / len(recent)):.0f}")
        if checkpoint is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            _save_checkpoint(checkpoint, step + 1, model, opt, gen, losses, step_times)
        if cfg.time_budget_s and time.time() - t_begin > cfg.time_budget_s and step + 1 < cfg.steps:
            result.status = "time budget"
            if checkpoint is not None:
                _save_checkpoint(checkpoint, step + 1, model, opt, gen, losses, step_times)
            break
    bar.close()
    timed = sorted(step_times[min(5, len(step_times) // 2):]) or sorted(step_times)
    if timed:
        result.step_time_s = timed[len(timed) // 2]
        result.tokens_per_s = (tokens_per_step or 0) / result.step_time_s if tokens_per_step else float("nan")
    result.wall_s = round(time.time() - t_begin, 2)
    model.eval()
    return result


# ----------------------------------------------------------------------------- model cache


def cache_root() -> Path:
    """Where trained models are kept (ATTNLAB_CACHE overrides): outputs/cache/models."""
    env = os.environ.get("ATTNLAB_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "outputs" / "cache" / "models"


def cache_key(*parts: Any) -> str:
    """A hash of the full configuration (and the cache version) naming a trained model."""
    payload = json.dumps([CACHE_VERSION, *[to_dict(p) for p in parts]], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def train_or_load(model: nn.Module, batch_fn: BatchFn, train_cfg: TrainConfig, *key_parts: Any,
                  progress: bool = True, desc: str = "train") -> tuple[nn.Module, TrainResult]:
    """Train `model` unless a model with the same full config is cached; resumable through its checkpoint."""
    from safetensors.torch import load_file, save_file

    key = cache_key(train_cfg, *key_parts)
    folder = cache_root() / key
    weights, info_path = folder / "model.safetensors", folder / "train.json"
    if weights.exists() and info_path.exists():
        info = read_json(info_path)
        model.load_state_dict(load_file(str(weights)), strict=False)
        model.eval()
        r = TrainResult(steps=info["steps"], losses=info.get("losses", []), tokens_per_s=info["tokens_per_s"],
                        step_time_s=info["step_time_s"], wall_s=info["wall_s"], status="cached")
        return model, r
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "config.json", [to_dict(p) for p in (train_cfg, *key_parts)])
    result = train(model, batch_fn, train_cfg, checkpoint=folder / "checkpoint.pt", progress=progress, desc=desc)
    if result.status == "completed":
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if getattr(getattr(model, "cfg", None), "tie_embeddings", False):
            state.pop("head.weight", None)  # tied to embed.weight; safetensors stores no shared tensors
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model.", suffix=".tmp")  # unique: runs may share the cache
        os.close(fd)
        save_file(state, tmp)
        os.replace(tmp, weights)
        atomic_write_json(info_path, result.to_dict())
        (folder / "checkpoint.pt").unlink(missing_ok=True)
    return model, result


def lm_batches(data: Tensor, batch_size: int, seq_len: int) -> BatchFn:
    """Random byte windows for causal language modelling."""
    from .data import random_batch

    def fn(step: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor | None]:
        x, y = random_batch(data, batch_size, seq_len, gen)
        return x, y, None

    return fn


__all__ = ["TrainConfig", "train", "train_or_load", "TrainStep", "TrainResult", "TrainingDiverged", "lr_at",
           "lm_batches", "cache_key", "cache_root"]
