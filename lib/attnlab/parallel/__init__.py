"""Training on several processes: data parallelism (torchrun, DistributedDataParallel) and ring self-attention."""

from .launch import DistributedRunFailed, World, launch, world
from .ring import ring_attention

__all__ = ["DistributedRunFailed", "World", "launch", "world", "ring_attention"]
