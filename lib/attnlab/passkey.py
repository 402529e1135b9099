"""Passkey retrieval (Mohtashami & Jaggi 2023, landmark attention's `run_test.py`).

A document is: a task description, filler text, an information line with a random key of k
digits, more filler, and a closing question -- "What is the pass key? The pass key is" -- whose
continuation is the key. The information line sits at a chosen depth (0: right after the
description, 1: right before the question) of a document of a chosen length in tokens. The
model is right when greedy decoding of the k digits after the question gives the key exactly.

Greedy exact match equals teacher-forced exact match: greedy decoding emits the key iff the
arg-max at every answer position is the key's next token given the key's earlier tokens
(before the first wrong token both see the same prefix; after it, greedy has already failed).
So one forward pass over the whole document scores a sample (`generate_greedy` is the literal
procedure, and a test checks that both agree).

Tokens are produced by a `Codec`: bytes for the workbook's byte-level models, a transformers
tokenizer for a pretrained model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from typing_extensions import Self

from .config import Config, one_of
from .errors import ConfigError

Codec = Callable[[str], list[int]]  # text -> token ids


def byte_codec(text: str) -> list[int]:
    """UTF-8 bytes as tokens (vocabulary 256)."""
    return list(text.encode())


class PasskeyFormat(Config):
    """The document's text; defaults are the published format (landmark attention's run_test.py)."""

    intro: str = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                  "I will quiz you about the important information there.")
    filler: str = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    info: str = "The pass key is {key}. Remember it. {key} is the pass key."
    question: str = "What is the pass key? The pass key is"
    separator: str = "\n"
    digits: int = Field(5, ge=1, le=18, description="digits of the key (first digit not 0)")
    filler_source: one_of(("repeat", "corpus")) = Field(
        "repeat", description="repeat: the filler sentence repeated (published); corpus: text of the corpus split")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if "{key}" not in self.info:
            raise ConfigError(f"info = {self.info!r}: must contain {{key}}")
        if self.filler_source == "repeat" and not self.filler:
            raise ConfigError("filler = '': an empty filler cannot fill a document")
        return self


@dataclass(frozen=True)
class Sample:
    """One document: tokens (n,), the answer's token positions in it and the key."""

    tokens: Tensor  # (n,) int64
    answer: slice  # positions of the key's tokens in `tokens`
    key: str
    depth: float


def fixed_tokens(fmt: PasskeyFormat, codec: Codec = byte_codec) -> int:
    """Tokens of a document without filler (the shortest document of this format)."""
    return len(_parts(fmt, "9" * fmt.digits, codec, [], [])[0])


def _parts(fmt: PasskeyFormat, key: str, codec: Codec, prefix: list[int], suffix: list[int]
           ) -> tuple[list[int], int]:
    sep = codec(fmt.separator) if fmt.separator else []
    head = (codec(fmt.intro) + sep) if fmt.intro else []
    body = head + prefix + sep + codec(fmt.info.format(key=key)) + sep + suffix + sep + codec(fmt.question)
    answer = codec(" " + key)
    return body + answer, len(answer)


def make_sample(fmt: PasskeyFormat, length: int, depth: float, rng: np.random.Generator,
                codec: Codec = byte_codec, corpus: Tensor | None = None) -> Sample:
    """A document of exactly `length` tokens with the information line at `depth` (0..1) of the filler."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth = {depth}: must be in [0, 1]")
    key = str(int(rng.integers(10 ** (fmt.digits - 1), 10 ** fmt.digits)))
    n_fill = length - fixed_tokens(fmt, codec)
    if n_fill < 0:
        raise ValueError(f"length = {length}: shorter than the format's {fixed_tokens(fmt, codec)} fixed tokens")
    if fmt.filler_source == "repeat":
        unit = codec(fmt.filler + " ")
        stream = unit * (n_fill // max(1, len(unit)) + 2)
        n_pre = int(round(depth * n_fill))
        prefix, suffix = stream[:n_pre], stream[:n_fill - n_pre]  # both start at the filler's start, as published
    else:
        if corpus is None:
            raise ValueError("filler_source = 'corpus' needs the corpus split")
        span = n_fill if codec is byte_codec else 8 * n_fill + 64  # a tokenizer's tokens span several bytes
        start = int(rng.integers(0, max(1, corpus.numel() - span - 1)))
        chunk = corpus[start:start + span]
        text = chunk.tolist() if codec is byte_codec else codec(bytes(chunk.tolist()).decode(errors="replace"))
        text = text[:n_fill]
        if len(text) < n_fill:
            raise ValueError(f"the corpus split is too short for {n_fill} tokens of filler")
        n_pre = int(round(depth * n_fill))
        prefix, suffix = text[:n_pre], text[n_pre:]
    ids, k = _parts(fmt, key, codec, prefix, suffix)  # parts joined as token ids: exactly `length` tokens
    t = torch.tensor(ids, dtype=torch.long)
    return Sample(t, slice(len(ids) - k, len(ids)), key, depth)


def samples(fmt: PasskeyFormat, length: int, depths: Sequence[float], n: int, seed: int,
            codec: Codec = byte_codec, corpus: Tensor | None = None) -> list[Sample]:
    """`n` documents per depth at `length`; the same documents for every model given (length, seed)."""
    rng = np.random.default_rng([seed, length])
    return [make_sample(fmt, length, d, rng, codec, corpus) for d in depths for _ in range(n)]


def training_batches(fmt: PasskeyFormat, corpus: Tensor, batch_size: int, seq_len: int, fraction: float
                     ) -> Callable[[int, torch.Generator], tuple[Tensor, Tensor, None]]:
    """Causal-LM batches of seq_len + 1 tokens: a `fraction` of rows are passkey documents (random depth and
    key), the rest random windows of the corpus."""
    from .data import random_batch

    def fn(step: int, gen: torch.Generator) -> tuple[Tensor, Tensor, None]:
        x, y = random_batch(corpus, batch_size, seq_len, gen)
        rng = np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen)))
        for i in np.flatnonzero(rng.random(batch_size) < fraction):
            s = make_sample(fmt, seq_len + 1, float(rng.random()), rng, corpus=corpus).tokens
            x[i], y[i] = s[:-1], s[1:]
        return x, y, None

    return fn


@torch.no_grad()
def score(model: nn.Module, batch: Sequence[Sample], batch_size: int = 16) -> list[bool]:
    """Exact match of the key under greedy decoding (teacher-forced form; see the module docstring)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[bool] = []
    for i in range(0, len(batch), batch_size):
        chunk = batch[i:i + batch_size]
        if len({s.tokens.numel() for s in chunk}) != 1:
            raise ValueError("score: every sample of a batch must have the same length")
        x = torch.stack([s.tokens for s in chunk]).to(device)  # (b, n)
        pred = model(x[:, :-1]).argmax(-1)  # (b, n-1): prediction of token t+1
        for j, s in enumerate(chunk):
            a = s.answer
            out.append(bool((pred[j, a.start - 1:a.stop - 1] == x[j, a]).all()))
    return out


@torch.no_grad()
def generate_greedy(model: nn.Module, prompt: Tensor, n_new: int) -> Tensor:
    """Greedy decoding of `n_new` tokens after `prompt` (n,), one forward pass per token (the literal test)."""
    model.eval()
    device = next(model.parameters()).device
    x = prompt[None].to(device)
    for _ in range(n_new):
        nxt = model(x)[:, -1].argmax(-1, keepdim=True)
        x = torch.cat([x, nxt], dim=1)
    return x[0, prompt.numel():].cpu()


def min_length(fmt: PasskeyFormat, codec: Codec = byte_codec) -> int:
    """The shortest document length this format allows (one token of filler)."""
    return fixed_tokens(fmt, codec) + 1


def check_length(fmt: PasskeyFormat, seq_len: int, field: str) -> None:
    """ConfigError naming `field` when training windows of `seq_len` tokens (documents of seq_len + 1) cannot
    hold the format."""
    if seq_len + 1 < min_length(fmt):
        raise ConfigError(f"{field} = {seq_len}: a passkey document of this format needs at least "
                          f"{min_length(fmt)} tokens (shorten passkey.intro / info / question or raise {field})")
