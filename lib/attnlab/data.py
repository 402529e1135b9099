"""Corpora by spec (stdlib | file:PATH | hf:NAME[/CONFIG]), byte tokens, batching.

The default corpus is the Python standard library's own ``.py`` sources (``site-packages``
left out): present on every machine, no download. Splits are by file, decided by a hash of
the file's relative path, so they do not move when files are added elsewhere.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from pydantic import Field, field_validator
from torch import Tensor

from .config import Config
from .errors import ConfigError


class DataConfig(Config):
    """A corpus spec: stdlib | file:PATH | hf:NAME[/CONFIG]."""

    corpus: str = "stdlib"
    valid_fraction: float = Field(0.05, gt=0, le=0.5)
    test_fraction: float = Field(0.05, gt=0, le=0.5)
    max_bytes: int = Field(0, ge=0, description="cap on corpus bytes read (0: all)")

    @field_validator("corpus")
    @classmethod
    def _corpus(cls, spec: str) -> str:
        """What can be checked without reading the corpus: the scheme, that a path exists and holds bytes,
        that `hf:` has its package."""
        if (why := spec_problem(spec)):
            raise ValueError(why)
        return spec

SEPARATOR = b"\n\n"
VOCAB_SIZE = 256


@dataclass(frozen=True)
class Corpus:
    """Byte tokens (uint8 tensors) of a corpus, split into train / valid / test."""

    spec: str
    train: Tensor
    valid: Tensor
    test: Tensor
    n_files: int

    def describe(self) -> str:
        mb = lambda t: f"{t.numel() / 1e6:.2f} MB"  # noqa: E731
        return (f"{self.spec}: {self.n_files} files; train {mb(self.train)}, valid {mb(self.valid)}, "
                f"test {mb(self.test)}")


def encode(text: str | bytes) -> Tensor:
    """Bytes -> uint8 token tensor (vocabulary 256)."""
    data = text.encode() if isinstance(text, str) else text
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def decode(tokens: Tensor) -> str:
    return bytes(tokens.to(torch.uint8).tolist()).decode(errors="replace")


def _split_of(rel: str, valid: float, test: float) -> str:
    h = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "valid" if h < valid else "test" if h < valid + test else "train"


def _from_files(spec: str, root: Path, files: list[Path], cfg: DataConfig) -> Corpus:
    parts: dict[str, list[bytes]] = {"train": [], "valid": [], "test": []}
    total = 0
    for f in files:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        if not data:
            continue
        parts[_split_of(str(f.relative_to(root)), cfg.valid_fraction, cfg.test_fraction)].append(data)
        total += len(data)
        if cfg.max_bytes and total >= cfg.max_bytes:
            break
    if total == 0:
        raise ConfigError(f"data.corpus = {spec!r}: the corpus is empty")
    # a split left empty by the hash (tiny corpora) borrows the tail of train
    for name in ("valid", "test"):
        if not parts[name] and len(parts["train"]) > 1:
            parts[name].append(parts["train"].pop())
    tensors = {k: encode(SEPARATOR.join(v)) for k, v in parts.items()}
    return Corpus(spec, tensors["train"], tensors["valid"], tensors["test"], len(files))


def stdlib_files() -> tuple[Path, list[Path]]:
    """The standard library's .py files in a deterministic order, without site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if "site-packages" not in p.parts and "dist-packages" not in p.parts)
    return root, files


def _contiguous(spec: str, data: bytes, cfg: DataConfig) -> Corpus:
    if not data:
        raise ConfigError(f"data.corpus = {spec!r}: the corpus is empty")
    n = len(data)
    a = int(n * (1 - cfg.valid_fraction - cfg.test_fraction))
    b = int(n * (1 - cfg.test_fraction))
    if not 0 < a < b < n:
        raise ConfigError(f"data.corpus = {spec!r}: {n} bytes are too few to split into train, valid and test")
    return Corpus(spec, encode(data[:a]), encode(data[a:b]), encode(data[b:]), 1)


def _load_hf(spec: str, cfg: DataConfig) -> Corpus:
    name = spec[3:]
    path, _, conf = name.partition("/")
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise ConfigError(f"data.corpus = {spec!r}: needs the `datasets` package (pip install -e '.[hf]')") from None
    try:
        ds = datasets.load_dataset(path, conf or None)
    except Exception as e:  # offline, unknown name, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"data.corpus = {spec!r}: could not load from the Hugging Face hub (needs the "
                          f"network): {first}") from None
    split_names = {"train": "train", "valid": "validation", "test": "test"}
    out = {}
    for k, s in split_names.items():
        if s not in ds:
            raise ConfigError(f"data.corpus = {spec!r}: the dataset has no {s!r} split")
        text = "\n".join(ds[s]["text"])
        if cfg.max_bytes:
            text = text[: cfg.max_bytes]
        out[k] = encode(text)
    return Corpus(spec, out["train"], out["valid"], out["test"], 0)


@lru_cache(maxsize=4)
def load_corpus(cfg: DataConfig) -> Corpus:
    """The corpus named by `cfg.corpus` (stdlib | file:PATH | hf:NAME[/CONFIG]), cached per process."""
    spec = cfg.corpus
    if spec == "stdlib":
        root, files = stdlib_files()
        return _from_files(spec, root, files, cfg)
    if spec.startswith("file:"):
        path = Path(spec[5:]).expanduser()
        if not path.exists():
            raise ConfigError(f"data.corpus = {spec!r}: no such file or folder")
        if path.is_file():
            data = path.read_bytes()
            return _contiguous(spec, data[: cfg.max_bytes] if cfg.max_bytes else data, cfg)
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return _from_files(spec, path, files, cfg)
    if spec.startswith("hf:") and len(spec) > 3:
        return _load_hf(spec, cfg)
    raise ConfigError(f"data.corpus = {spec!r}: unknown corpus; valid choices: {SCHEMES}")


SCHEMES = "stdlib, file:PATH, hf:NAME[/CONFIG]"


def spec_problem(spec: str) -> str:
    """Why a corpus spec cannot work ('' when it may): the scheme, a path that must exist and hold bytes,
    `hf:` without its package. Checked without reading the corpus."""
    if spec == "stdlib":
        return ""
    if spec.startswith("file:"):
        path = Path(spec[5:]).expanduser()
        if not path.exists():
            return "no such file or folder"
        sizes = [path.stat().st_size] if path.is_file() else [p.stat().st_size for p in path.rglob("*") if p.is_file()]
        return "" if any(sizes) else "the corpus is empty"
    if spec.startswith("hf:") and len(spec) > 3:
        try:
            import datasets  # noqa: F401
        except ImportError:
            return "needs the `datasets` package (pip install -e '.[hf]')"
        return ""
    return f"unknown corpus; valid choices: {SCHEMES}"


def check_sizes(corpus: Corpus, train_len: int, eval_len: int) -> None:
    """ConfigError before training if a split is too small for the training or evaluation length."""
    if corpus.train.numel() < train_len + 2:
        raise ConfigError(f"data.corpus = {corpus.spec!r}: train split has {corpus.train.numel()} bytes, fewer "
                          f"than train.seq_len + 2 = {train_len + 2}")
    for name, need, why in (("valid", eval_len + 1, "the longest evaluation length + 1"),
                            ("test", 2 * eval_len + 1, "2 x the longest evaluation length + 1 (a segment of "
                                                       "context before each scored one)")):
        n = getattr(corpus, name).numel()
        if n < need:
            raise ConfigError(f"data.corpus = {corpus.spec!r}: {name} split has {n} bytes, fewer than {why} = {need}")


def random_batch(data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random windows: inputs (B, T) and next-byte targets (B, T) as int64."""
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]  # (B, T+1)
    chunk = data[idx].long()
    return chunk[:, :-1], chunk[:, 1:]
