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
from pydantic import Field, model_validator
from torch import Tensor, nn

from .config import Config, to_dict
from .errors import ConfigError
from .io import atomic_write_bytes, atomic_write_json, read_json
from .parallel.launch import World, launch, world

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
    nproc: int = Field(1, ge=1, description="processes for data-parallel training (DistributedDataParallel, "
                       "started as torchrun does); each takes batch_size / nproc rows of the same global batch. "
                       "Under torchrun its own process count applies")

    @model_validator(mode="after")
    def _shards(self) -> TrainConfig:
        if self.batch_size % self.nproc:
            raise ValueError(f"batch_size = {self.batch_size}: must be a multiple of nproc = {self.nproc}")
        return self


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
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        self.params, self.opt, self.grad_clip, self.compiled = params, opt, grad_clip, compile
        self.reduce = reduce  # the loss over every rank (data parallel), before the finite check
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
        shown = self.reduce(loss.detach()) if self.reduce else loss.detach()
        if not torch.isfinite(shown):  # every rank sees the same value and stops together
            raise TrainingDiverged(f"non-finite loss ({shown.item()})")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self._update()
        return shown


class _Loss(nn.Module):
    """The model's loss as a forward pass, which DistributedDataParallel wraps (it syncs through forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor, mask: Tensor | None = None, weight: float = 1.0) -> Tensor:
        return self.model.loss(x, y, mask=mask) * weight


def _shard(x: Tensor, y: Tensor, mask: Tensor | None, w: World) -> tuple[Tensor, Tensor, Tensor | None, float]:
    """This rank's rows of the global batch, and the weight that makes the ranks' mean the global mean."""
    rows = slice(w.rank * (x.shape[0] // w.size), (w.rank + 1) * (x.shape[0] // w.size))
    if mask is None:
        return x[rows], y[rows], None, 1.0
    total = float(mask.sum())
    return x[rows], y[rows], mask[rows], float(mask[rows].sum()) * w.size / max(total, 1.0)


def _mean_over_ranks(t: Tensor) -> Tensor:
    import torch.distributed as dist

    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def train(model: nn.Module, batch_fn: BatchFn, cfg: TrainConfig, *, checkpoint: Path | None = None,
          progress: bool = True, desc: str = "train", device: str | torch.device | None = None) -> TrainResult:
    """Train `model` for cfg.steps (resuming from `checkpoint` if present); never a silent NaN.

    Under torchrun (or :func:`attnlab.parallel.launch`) every rank draws the same global batch and trains
    on its rows through DistributedDataParallel (Li et al. 2020, "PyTorch Distributed"); rank 0 writes the
    checkpoints, and the result equals one process's with the same global batch up to float rounding.
    """
    from tqdm.auto import tqdm

    w = world()
    if w.size > 1 and cfg.batch_size % w.size:
        raise ConfigError(f"train.batch_size = {cfg.batch_size}: must be a multiple of the {w.size} processes")
    device = torch.device(device or (w.device() if w.size > 1 else
                                     ("cuda" if torch.cuda.is_available() else "cpu")))
    progress = progress and w.main
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
    loss_fn: LossFn = model.loss
    if w.size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        loss_fn = DDP(_Loss(model), device_ids=[device.index] if device.type == "cuda" else None)
    step_fn = TrainStep(loss_fn, [p for p in model.parameters() if p.requires_grad], opt, cfg.grad_clip,
                        compile=cfg.compile, autocast=autocast, reduce=_mean_over_ranks if w.size > 1 else None)
    t_begin = time.time()
    bar = tqdm(range(start, cfg.steps), desc=desc, initial=start, total=cfg.steps, disable=not progress,
               mininterval=1.0, leave=False)
    tokens_per_step = None
    for step in bar:
        t0 = time.perf_counter()
        x, y, mask = batch_fn(step, gen)  # the global batch: the same on every rank
        extra: dict[str, float] = {}
        if w.size > 1:
            x, y, mask, extra["weight"] = _shard(x, y, mask, w)
        x, y = x.to(device), y.to(device)
        mask = mask.to(device) if mask is not None else None
        tokens_per_step = (int(mask.sum()) if mask is not None else x.numel()) * w.size
        try:
            loss = step_fn(x, y, mask=mask, lr=lr_at(step, cfg), **extra)
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
        if checkpoint is not None and w.main and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            _save_checkpoint(checkpoint, step + 1, model, opt, gen, losses, step_times)
        if _out_of_time(cfg, t_begin, step, w):
            result.status = "time budget"
            if checkpoint is not None and w.main:
                _save_checkpoint(checkpoint, step + 1, model, opt, gen, losses, step_times)
            break
    bar.close()
    timed = sorted(step_times[min(5, len(step_times) // 2):]) or sorted(step_times)
    if timed:
        result.step_time_s = timed[len(timed) // 2]
        result.tokens_per_s = (tokens_per_step or 0) / result.step_time_s if tokens_per_step else float("nan")
    result.wall_s = round(time.time() - t_begin, 2)
    model.eval()
    if w.size > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0's checkpoint is written before any rank goes on
    return result


def _out_of_time(cfg: TrainConfig, t_begin: float, step: int, w: World) -> bool:
    """Past the time budget (rank 0's clock decides for every rank)."""
    if not cfg.time_budget_s or step + 1 >= cfg.steps:
        return False
    over = torch.tensor([float(time.time() - t_begin > cfg.time_budget_s)])
    if w.size > 1:
        import torch.distributed as dist

        dist.broadcast(over, 0)
    return bool(over.item())


# ----------------------------------------------------------------------------- model cache


def cache_root() -> Path:
    """Where trained models are kept (ATTNLAB_CACHE overrides): outputs/cache/models."""
    env = os.environ.get("ATTNLAB_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "outputs" / "cache" / "models"


def cache_key(*parts: Any) -> str:
    """A hash of the full configuration (and the cache version) naming a trained model; the number of
    data-parallel processes is not part of it (the same global batch trains the same model)."""
    dicts = [to_dict(p) for p in parts]
    for p, d in zip(parts, dicts):
        if isinstance(p, TrainConfig):
            d.pop("nproc", None)
    payload = json.dumps([CACHE_VERSION, *dicts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def train_or_load(model: nn.Module, batch_fn: BatchFn, train_cfg: TrainConfig, *key_parts: Any,
                  progress: bool = True, desc: str = "train") -> tuple[nn.Module, TrainResult]:
    """Train `model` unless a model with the same full config is cached; resumable through its checkpoint.

    With ``train_cfg.nproc > 1`` (outside torchrun) the training runs in that many processes started here
    (:func:`attnlab.parallel.launch`), and the model is then read back from the cache rank 0 wrote."""
    from safetensors.torch import load_file, save_file

    w = world()
    if train_cfg.nproc > 1 and w.size == 1 and not _cached(train_cfg, *key_parts):
        _train_in_processes(model, batch_fn, train_cfg, key_parts, desc)
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
    if w.main:
        atomic_write_json(folder / "config.json", [to_dict(p) for p in (train_cfg, *key_parts)])
    result = train(model, batch_fn, train_cfg, checkpoint=folder / "checkpoint.pt", progress=progress, desc=desc)
    if result.status == "completed" and w.main:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if getattr(getattr(model, "cfg", None), "tie_embeddings", False):
            state.pop("head.weight", None)  # tied to embed.weight; safetensors stores no shared tensors
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model.", suffix=".tmp")  # unique: runs may share the cache
        os.close(fd)
        save_file(state, tmp)
        os.replace(tmp, weights)
        atomic_write_json(info_path, result.to_dict() | {"processes": w.size})
        (folder / "checkpoint.pt").unlink(missing_ok=True)
    if w.size > 1:
        import torch.distributed as dist

        dist.barrier()  # the weights are in the cache before any rank returns
    return model, result


def _train_in_processes(model: nn.Module, batch_fn: BatchFn, train_cfg: TrainConfig, key_parts: tuple[Any, ...],
                        desc: str) -> None:
    from .parallel.launch import DistributedRunFailed

    try:
        launch(_train_rank, train_cfg.nproc, model, batch_fn, train_cfg, key_parts, desc)
    except DistributedRunFailed as e:
        ckpt = cache_root() / cache_key(train_cfg, *key_parts) / "checkpoint.pt"
        where = (f"the next run resumes from its checkpoint at step {int(_load_checkpoint(ckpt)['step'])}"
                 if ckpt.exists() else "no checkpoint yet: the next run starts afresh")
        raise DistributedRunFailed(f"training {desc}: {e}; {where} ({ckpt.parent})") from None


def _train_rank(model: nn.Module, batch_fn: BatchFn, train_cfg: TrainConfig, key_parts: tuple[Any, ...],
                desc: str) -> None:
    """One rank of a data-parallel training started by train_or_load (its result goes through the cache)."""
    train_or_load(model, batch_fn, train_cfg, *key_parts, desc=desc)


def _cached(train_cfg: TrainConfig, *key_parts: Any) -> bool:
    folder = cache_root() / cache_key(train_cfg, *key_parts)
    return (folder / "model.safetensors").exists() and (folder / "train.json").exists()


def lm_batches(data: Tensor, batch_size: int, seq_len: int) -> BatchFn:
    """Random byte windows for causal language modelling."""
    from .data import random_batch

    def fn(step: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor | None]:
        x, y = random_batch(data, batch_size, seq_len, gen)
        return x, y, None

    return fn


__all__ = ["TrainConfig", "train", "train_or_load", "TrainStep", "TrainResult", "TrainingDiverged", "lr_at",
           "lm_batches", "cache_key", "cache_root"]
