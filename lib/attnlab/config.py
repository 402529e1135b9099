"""Validated, frozen configs (pydantic v2), override parsing, profiles and presets.

This module knows no component: each component declares its own config class beside its code
(``model.ModelConfig``, ``train.TrainConfig``, an encoding's ``Params``, ...) as a subclass of
:class:`Config`. Components chosen by name (an encoding, an attention variant) are a
:class:`Component`: a name from a registry plus that class's own ``Params``. Every error is
one line naming the field, the bad value and the valid choices (:func:`describe`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .registry import Registry

__all__ = [
    "Config", "Component", "one_of", "choice", "NoParams", "ConfigError", "PROFILES", "PROFILE_RANK", "describe", "parse_overrides", "nest",
    "merge", "resolve_profile", "load_presets", "load", "to_dict", "validate", "replace", "known_keys",
]

PROFILES: tuple[str, ...] = ("smoke", "cpu", "gpu")
PROFILE_RANK = {p: i for i, p in enumerate(PROFILES)}

C = TypeVar("C", bound=BaseModel)


class Config(BaseModel):
    """Base of every config: frozen, no unknown keys (named with the valid ones), numbers in any notation."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        unknown = [k for k in data if k not in cls.model_fields]
        if unknown:
            choices = ", ".join(sorted(cls.model_fields)) or "none (it takes no parameters)"
            raise PydanticCustomError("unknown_key", "{key}: unknown parameter; valid choices: {choices}",
                                      {"key": str(unknown[0]), "choices": choices})
        out = dict(data)
        for name, value in data.items():
            if isinstance(value, bool) and cls.model_fields[name].annotation in (int, float):
                raise PydanticCustomError("nested", "{text}", {"text": f"{name} = {value!r}: expected a number"})  # a partial mapping overrides the field's own default, not the class's
            default = cls.model_fields[name].get_default(call_default_factory=True)
            if isinstance(value, Mapping) and isinstance(default, Config):
                base = default.model_dump()
                if not isinstance(default, Component) or value.get("name", default.name) == default.name:
                    out[name] = merge(base, value)
        return out


def choice(value: str, names: Sequence[str]) -> str:
    """`value` if it is one of `names`, else a one-line error listing them (for field validators)."""
    if value not in names:
        raise PydanticCustomError("choice", "unknown; valid choices: {choices}", {"choices": ", ".join(names)})
    return value


def one_of(names: Callable[[], Sequence[str]] | Sequence[str]) -> Any:
    """A string type restricted to `names` (a list, or a function giving the current names of a registry)."""
    return Annotated[str, AfterValidator(lambda v: choice(v, list(names() if callable(names) else names)))]


class Component(Config):
    """A component chosen by name from `registry`, with the parameters its class declares (`cls.Params`).

    Written as a name (``"alibi"``) or a mapping (``{name: fire, hidden: 16}``); ``--set x.hidden=16``
    merges into either. Subclasses set ``registry`` and ``default``."""

    registry: ClassVar[Registry[Any]]
    default: ClassVar[str]
    name: str
    params: Config

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, Component):
            return {"name": data.name, "params": data.params}
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, Mapping):
            raise PydanticCustomError("component", "expected a name or a mapping with `name`; valid names: {names}",
                                      {"names": ", ".join(cls.registry.names())})
        if "params" in data and isinstance(data["params"], BaseModel):
            return dict(data)
        rest = dict(data)
        name = rest.pop("name", cls.default)
        if not isinstance(name, str) or name not in cls.registry:
            raise PydanticCustomError("nested", "{text}", {"text": f"name = {name!r}: unknown; valid choices: "
                                                                    f"{', '.join(cls.registry.names())}"})
        try:
            params = cls.registry[name].Params.model_validate(rest)
        except ValidationError as e:
            raise PydanticCustomError("nested", "{text}", {"text": describe(e)}) from None
        return {"name": name, "params": params}

    @model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        return {"name": self.name, **self.params.model_dump(mode="json")}

    @property
    def cls(self) -> Any:
        """The registered implementation."""
        return self.registry[self.name]

    def with_params(self, **changes: Any) -> Component:
        """The same component with some parameters changed (validated)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def changed_params(self) -> dict[str, Any]:
        """The parameters that differ from the class's defaults."""
        defaults = type(self.params)().model_dump()
        return {k: v for k, v in self.params.model_dump().items() if v != defaults.get(k)}

    def label(self, name: str | None = None, sep: str = "") -> str:
        """`name` (default: the registry name) followed by the changed parameters, e.g. ``fire(hidden=16)``."""
        name, changed = name or self.name, self.changed_params()
        return name + (sep + "(" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")" if changed else "")

    def adapt(self, **changes: Any) -> Component:
        """Like `with_params`, for the parameters this component's class declares; others are ignored
        (an experiment sets the training length on every encoding that has one)."""
        fields = self.cls.Params.model_fields
        return self.with_params(**{k: v for k, v in changes.items() if k in fields})


class NoParams(Config):
    """A component without parameters."""


# ---------------------------------------------------------------------------- errors


def _fmt_value(v: Any) -> str:
    return repr(v) if not isinstance(v, Mapping) else "{...}"


_SHORT = ((r"^Input should be greater than or equal to (.*)$", r"must be >= \1"),
          (r"^Input should be greater than (.*)$", r"must be > \1"),
          (r"^Input should be less than or equal to (.*)$", r"must be <= \1"),
          (r"^Input should be less than (.*)$", r"must be < \1"),
          (r"^Input should be a valid (number|boolean|string|tuple|list|dictionary)\b.*$", r"expected a \1"),
          (r"^Input should be a valid integer.*$", "expected an integer"))


def describe(e: ValidationError) -> str:
    """One line for the first error of a ValidationError: `field = value: what is wrong`."""
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    loc = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", loc)
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "unknown_key":
        return f"{loc + '.' if loc else ''}{ctx['key']}: unknown parameter; valid choices: {ctx['choices']}"
    if kind == "nested":
        return f"{loc + '.' if loc else ''}{ctx['text']}"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    for pattern, short in _SHORT:
        msg = re.sub(pattern, short, msg)
    if isinstance(value, Mapping) and kind in ("value_error", "assertion_error"):  # a check across fields
        return f"{loc + '.' if loc else ''}{msg}"
    if kind in ("literal_error", "enum"):
        msg = "unknown; valid choices: " + ", ".join(s.strip("'") for s in re.split(r", | or ", ctx.get(
            "expected", "")))
    return f"{loc} = {_fmt_value(value)}: {msg}" if loc else msg


def validate(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    """`cls` built from a (nested) mapping, or a one-line ConfigError."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {describe(e)}" if where else describe(e)) from None


def replace(cfg: C, **changes: Any) -> C:
    """A copy of a frozen config with some fields changed, validated again."""
    return validate(type(cfg), {**{k: getattr(cfg, k) for k in type(cfg).model_fields}, **changes})


def to_dict(obj: Any) -> Any:
    """Plain-literal (JSON/YAML-safe) view of a config: tuples become lists, components {name, ...}."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def known_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every parameter of a config class (for `attnlab list`)."""
    out = []
    for name, f in cls.model_fields.items():
        tp = f.annotation
        if isinstance(tp, type) and issubclass(tp, Config) and not issubclass(tp, Component):
            out += known_keys(tp, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


# ---------------------------------------------------------------------------- overrides

# YAML 1.1 (PyYAML) reads 3e-4 and 1E-3 as strings; these are numbers wherever a user writes them
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _numbers(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        s = value.strip()
        return int(s) if re.fullmatch(r"[-+]?\d+", s) else float(s)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings (VALUE read as YAML: 3, 3e-4, true, [a, b]) into a flat dict."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: expected KEY=VALUE (e.g. train.steps=200)")
        k, v = p.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"--set {p!r}: empty key")
        try:
            out[k] = _numbers(yaml.safe_load(v)) if v.strip() else ""
        except yaml.YAMLError:
            out[k] = v
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'train.steps': 3} -> {'train': {'steps': 3}} (already nested mappings pass through)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        cur = out
        for p in parts[:-1]:
            nxt = cur.setdefault(p, {})
            if isinstance(nxt, str):  # a component given by name, now with parameters
                nxt = cur[p] = {"name": nxt}
            if not isinstance(nxt, dict):
                raise ConfigError(f"{key}: {p} is not a group of parameters")
            cur = nxt
        if isinstance(value, Mapping):
            value = nest(value)
        cur[parts[-1]] = merge(cur[parts[-1]], value) if isinstance(cur.get(parts[-1]), dict) else value
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings merged key by key (`over` wins); a name merged with parameters becomes {name, ...}."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), str) and "name" not in v:
            out[k] = {"name": out[k], **v}
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------- profiles and presets


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


def notebooks_dir() -> Path:
    """The folder holding the notebooks and their presets (ATTNLAB_NOTEBOOKS overrides)."""
    env = os.environ.get("ATTNLAB_NOTEBOOKS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "notebooks"


def load_presets(name: str) -> dict[str, dict[str, Any]]:
    """The presets file of a notebook: {profile: {parameter: value}} (numbers in any notation)."""
    path = notebooks_dir() / "presets" / f"{name}.yaml"
    if not path.exists():
        return {p: {} for p in PROFILES}
    data = yaml.safe_load(path.read_text()) or {}
    unknown = [k for k in data if k not in PROFILES]
    if unknown:
        raise ConfigError(f"{path.name}: {unknown[0]}: unknown profile; valid choices: {', '.join(PROFILES)}")
    return {p: _numbers(dict(data.get(p) or {})) for p in PROFILES}


def load(cls: type[C], name: str, profile: str, overrides: Mapping[str, Any] | None = None) -> C:
    """The validated config `cls` of notebook `name` at `profile`: defaults < preset < overrides."""
    profile = resolve_profile(profile)
    merged = merge(nest(load_presets(name)[profile]), nest(_numbers(dict(overrides or {}))))
    return validate(cls, merged, name)


def _distinct(seeds: tuple[int, ...]) -> tuple[int, ...]:
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct")
    return seeds


# the seeds a notebook trains each model with: at least one, non-negative, distinct
Seeds = Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(min_length=1), AfterValidator(_distinct)]
