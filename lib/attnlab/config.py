"""Frozen dataclass configs, presets per (notebook, profile), validated overrides.

Every config is a frozen dataclass whose fields carry their own constraints (``spec``);
``from_dict`` checks keys, types, ranges and choices and raises a one-line ``ConfigError``
naming the field, the bad value and the valid choices, before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .registry import Registry

__all__ = [
    "ConfigError", "spec", "from_dict", "to_dict", "parse_overrides", "nest", "PROFILES",
    "resolve_profile", "NOTEBOOKS", "notebook", "notebooks_dir", "load", "load_presets",
    "PEConfig", "ModelConfig", "TrainConfig", "EvalConfig", "DataConfig",
]

PROFILES: tuple[str, ...] = ("smoke", "cpu", "gpu")
PROFILE_RANK = {p: i for i, p in enumerate(PROFILES)}


def spec(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
         le: float | None = None, choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
         help: str = "", default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its constraints (bounds, choices) and a one-line help text."""
    meta = {"ge": ge, "gt": gt, "le": le, "choices": choices, "help": help}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def _choices(meta: Mapping[str, Any]) -> list[str] | None:
    c = meta.get("choices")
    if c is None:
        return None
    return list(c() if callable(c) else c)


def _fmt_choices(choices: Sequence[Any]) -> str:
    return ", ".join(repr(c) if not isinstance(c, str) else c for c in choices)


def _check_scalar(where: str, tp: Any, value: Any) -> Any:
    """Coerce/validate one value against a type annotation; raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} = {value!r}: invalid; valid choices: {_fmt_choices(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_scalar(where, a, value)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where} = {value!r}: invalid")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{where} = {value!r}: expected a list")
        inner = args[0] if args else Any
        return tuple(_check_scalar(f"{where}[{i}]", inner, v) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r}: expected a mapping of {tp.__name__} fields")
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} = {value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected a string")
        return value
    return value


def _check_constraints(where: str, meta: Mapping[str, Any], value: Any) -> None:
    values = value if isinstance(value, tuple) else (value,)
    choices = _choices(meta)
    for v in values:
        if v is None:
            continue
        if choices is not None and isinstance(v, str) and v not in choices:
            raise ConfigError(f"{where} = {v!r}: unknown; valid choices: {', '.join(choices)}")
        if isinstance(v, int | float) and not isinstance(v, bool):
            if meta.get("ge") is not None and v < meta["ge"]:
                raise ConfigError(f"{where} = {v!r}: must be >= {meta['ge']}")
            if meta.get("gt") is not None and v <= meta["gt"]:
                raise ConfigError(f"{where} = {v!r}: must be > {meta['gt']}")
            if meta.get("le") is not None and v > meta["le"]:
                raise ConfigError(f"{where} = {v!r}: must be <= {meta['le']}")


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build the frozen dataclass `cls` from a (nested) mapping, validating every field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown parameter; valid choices: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, Mapping):
            default = _field_default(f)
            if default is not None:  # a partial mapping overrides the field's own default, not the class's
                value = _merge(to_dict(default), value)
        value = _check_scalar(prefix + name, hints[name], value)
        _check_constraints(prefix + name, f.metadata, value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def to_dict(obj: Any) -> Any:
    """Plain-literal (JSON/YAML-safe) view of a config: tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def validate_all(obj: Any, where: str = "") -> None:
    """Re-check constraints of an already-built config (defaults included)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        name = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(v):
            validate_all(v, name)
        else:
            _check_constraints(name, f.metadata, v)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings (VALUE read as YAML: 3, 0.1, true, [a, b]) into a flat dict."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: expected KEY=VALUE (e.g. train.steps=200)")
        k, v = p.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"--set {p!r}: empty key")
        try:
            out[k] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            out[k] = v
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'train.steps': 3} -> {'train': {'steps': 3}} (already nested mappings pass through)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        cur = out
        for p in parts[:-1]:
            nxt = cur.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{key}: {p} is not a group of parameters")
            cur = nxt
        if isinstance(value, Mapping):
            value = nest(value)
            if isinstance(cur.get(parts[-1]), dict):
                cur[parts[-1]] = _merge(cur[parts[-1]], value)
                continue
        cur[parts[-1]] = value
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def resolve_profile(profile: str) -> str:
    """`auto` -> `gpu` when CUDA is available else `cpu` (ATTNLAB_AUTO_PROFILE overrides auto)."""
    valid = (*PROFILES, "auto")
    if profile not in valid:
        raise ConfigError(f"profile = {profile!r}: unknown; valid choices: {', '.join(valid)}")
    if profile != "auto":
        return profile
    forced = os.environ.get("ATTNLAB_AUTO_PROFILE")
    if forced:
        if forced not in PROFILES:
            raise ConfigError(f"ATTNLAB_AUTO_PROFILE = {forced!r}: unknown; valid choices: {', '.join(PROFILES)}")
        return forced
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------- notebooks

NOTEBOOKS: Registry[type] = Registry("notebook")


def notebook(name: str) -> Callable[[type], type]:
    """Register a notebook's frozen config class under the notebook's file stem."""
    return NOTEBOOKS.register(name)


def notebooks_dir() -> Path:
    """The folder holding the notebooks and their presets (ATTNLAB_NOTEBOOKS overrides)."""
    env = os.environ.get("ATTNLAB_NOTEBOOKS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "notebooks"


def _ensure_notebooks_registered() -> None:
    from . import experiments  # noqa: F401  (registers every notebook config)


def resolve_notebook(name: str) -> str:
    """Full notebook name from a name or a unique prefix ('01', '01_positional')."""
    _ensure_notebooks_registered()
    name = name.removesuffix(".ipynb").split("/")[-1]
    if name in NOTEBOOKS:
        return name
    hits = [n for n in NOTEBOOKS.names() if n.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    raise ConfigError(f"notebook = {name!r}: unknown; valid choices: {', '.join(NOTEBOOKS.names())}")


def load_presets(name: str) -> dict[str, dict[str, Any]]:
    """The presets file of a notebook: {profile: {parameter: value}}."""
    path = notebooks_dir() / "presets" / f"{name}.yaml"
    if not path.exists():
        return {p: {} for p in PROFILES}
    data = yaml.safe_load(path.read_text()) or {}
    unknown = [k for k in data if k not in PROFILES]
    if unknown:
        raise ConfigError(f"{path.name}: {unknown[0]}: unknown profile; valid choices: {', '.join(PROFILES)}")
    return {p: dict(data.get(p) or {}) for p in PROFILES}


def load(name: str, profile: str = "auto", overrides: Mapping[str, Any] | None = None) -> Any:
    """The validated config of notebook `name` at `profile`: defaults < preset < overrides."""
    name = resolve_notebook(name)
    profile = resolve_profile(profile)
    cls = NOTEBOOKS.get(name)
    preset = nest(load_presets(name)[profile])
    merged = _merge(preset, nest(dict(overrides or {})))
    try:
        cfg = from_dict(cls, merged)
        validate_all(cfg)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    return cfg


def known_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted names of every parameter of a config class (for `attnlab list`)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += known_keys(tp, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


# ---------------------------------------------------------------------------- components


def _pe_names() -> list[str]:
    from .positional import ENCODINGS

    return ENCODINGS.names()


def _activation_names() -> list[str]:
    from .model import ACTIVATIONS

    return ACTIVATIONS.names()


def _attention_names() -> list[str]:
    from .attention import BACKENDS
    from .efficient import VARIANTS

    return BACKENDS.names() + VARIANTS.names()


@dataclass(frozen=True)
class PEConfig:
    """One positional encoding; `name` from ENCODINGS, `base` for the randomized wrapper."""

    name: str = spec("rope", choices=_pe_names, help="positional encoding")
    base: str = spec("rope", choices=_pe_names, help="encoding wrapped by `randomized`")
    max_len: int = spec(4096, ge=1, help="learned table size / randomized L_max")
    rope_theta: float = spec(10000.0, gt=0)
    factor: float = spec(4.0, ge=1.0, help="RoPE scaling factor (linear/dynamic/yarn/llama3)")
    original_max_len: int = spec(512, ge=1, help="training length for RoPE scaling variants")
    t5_num_buckets: int = spec(32, ge=2)
    t5_max_distance: int = spec(128, ge=2)
    shaw_clip: int = spec(16, ge=1)
    xpos_gamma: float = spec(512.0, gt=0)
    kerple_variant: Literal["log", "power"] = "log"
    fire_hidden: int = spec(32, ge=1)
    fire_threshold: float = spec(1.0, gt=0, help="FIRE's learned L, initial value")
    log_length_scaling: bool = spec(False, help="multiply logits by log n (Chiang & Cholak)")


@dataclass(frozen=True)
class ModelConfig:
    """A small Transformer (decoder = causal LM, encoder = bidirectional)."""

    mode: Literal["decoder", "encoder"] = "decoder"
    vocab_size: int = spec(256, ge=2)
    d_model: int = spec(128, ge=8)
    n_layers: int = spec(4, ge=1)
    n_heads: int = spec(4, ge=1)
    d_ff: int = spec(512, ge=1)
    activation: str = spec("gelu", choices=_activation_names,
                           help="feed-forward activation (relu: Vaswani et al. and the ALiBi code base)")
    dropout: float = spec(0.0, ge=0.0, le=0.9)
    attention: str = spec("sdpa", choices=_attention_names, help="exact backend or efficient variant")
    tie_embeddings: bool = True
    max_len: int = spec(4096, ge=1, help="longest input (Linformer's projection length)")
    window: int = spec(64, ge=1, help="local attention: keys within this distance")
    linformer_k: int = spec(64, ge=1, help="Linformer projected length k")
    features: int = spec(64, ge=1, help="Performer random features")
    probsparse_factor: float = spec(5.0, gt=0, help="Informer c: u = c ln L")
    pad_id: int = spec(-1, ge=-1, help="padding token: keys holding it are masked in attention (-1: none)")

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"model.d_model = {self.d_model}: must be divisible by model.n_heads = {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"model.d_model / model.n_heads = {self.d_model // self.n_heads}: head size must be even")
        if self.pad_id >= self.vocab_size:
            raise ConfigError(f"model.pad_id = {self.pad_id}: must be a token id below model.vocab_size = "
                              f"{self.vocab_size}, or -1 (no padding mask)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: AdamW, linear warm-up then cosine decay."""

    steps: int = spec(600, ge=1)
    batch_size: int = spec(32, ge=1)
    seq_len: int = spec(128, ge=2)
    lr: float = spec(1e-3, gt=0)
    min_lr_ratio: float = spec(0.1, ge=0, le=1)
    warmup: int = spec(50, ge=0)
    weight_decay: float = spec(0.1, ge=0)
    grad_clip: float = spec(1.0, ge=0)
    seed: int = spec(0, ge=0)
    checkpoint_every: int = spec(200, ge=1)
    compile: bool = False
    time_budget_s: float = spec(0.0, ge=0, help="stop early after this many seconds (0: none)")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation by length: non-overlapping windows and sliding window."""

    lengths: tuple[int, ...] = spec(default_factory=lambda: (128, 256, 512, 1024, 2048), ge=2)
    max_tokens: int = spec(65536, ge=1, help="tokens scored per length (non-overlapping)")
    sliding_stride: int = spec(0, ge=0, help="0: no sliding-window evaluation")
    sliding_tokens: int = spec(2048, ge=1, help="tokens scored per length (sliding)")
    batch_size: int = spec(8, ge=1)


@dataclass(frozen=True)
class DataConfig:
    """A corpus spec: stdlib | file:PATH | hf:NAME[/CONFIG]."""

    corpus: str = spec("stdlib")
    valid_fraction: float = spec(0.05, gt=0, le=0.5)
    test_fraction: float = spec(0.05, gt=0, le=0.5)
    max_bytes: int = spec(0, ge=0, help="cap on corpus bytes read (0: all)")
