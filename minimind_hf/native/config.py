"""Stage configs: flat dataclasses built from a dict (or YAML/JSON) plus overrides, validated before any work.

This is the Python API under the native trainers (the quickstart, tests, benchmarks use it). Users write
recipe YAMLs in trl's vocabulary instead; `minimind_hf.recipes.native_bridge` translates those to these
dataclasses.

Every stage has one dataclass (a subclass of `minimind_hf.native.loop.TrainConfig`). `load_config` builds it
from a file and command-line overrides and reports **all** problems at once in one `ConfigError`:
unknown keys (with the list of valid ones), values of the wrong type, and whatever the dataclass's own
``validate()`` finds (missing data files, negative learning rates...).

    cfg = load_config(SFTConfig, "sft.yaml", ["learning_rate=1e-4", "max_steps=20"])

Override values are parsed as YAML scalars (``max_steps=20`` -> int, ``data=[a.jsonl,b.jsonl]`` -> list,
``resume=null`` -> None); dict fields take dotted keys: ``model_overrides.hidden_size=128``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

__all__ = ["ConfigError", "config_to_dict", "load_config", "parse_overrides"]

C = TypeVar("C")


class ConfigError(ValueError):
    """One or more configuration problems; `problems` lists them, the message shows them all."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")


def parse_overrides(pairs: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``["a=1", "b.c=x"]`` -> ``({"a": 1, "b": {"c": "x"}}, problems)``."""
    out: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        if "=" not in pair:
            problems.append(f"override {pair!r} is not key=value")
            continue
        key, raw = pair.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if "." in key:
            head, sub = key.split(".", 1)
            node = out.setdefault(head, {})
            if not isinstance(node, dict):
                problems.append(f"override {pair!r}: {head} is set both as a value and as a dict")
                continue
            node[sub] = value
        else:
            out[key] = value
    return out, problems


def _read_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError([f"cannot parse {path}: {e}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping of key: value, got {type(data).__name__}"]
        )
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> tuple[Any, str | None]:
    """Check/convert `value` against the annotation `tp`; return (value, problem or None)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None, None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            v, err = _coerce(value, arg, key)
            if err is None:
                return v, None
            errors.append(err)
        return value, errors[0] if errors else f"{key}: invalid value {value!r}"
    if tp is Any:
        return value, None
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single file where a list is expected
        if not isinstance(value, (list, tuple)):
            return value, f"{key}: expected a list, got {value!r}"
        out = []
        for i, item in enumerate(value):
            v, err = _coerce(item, item_tp, f"{key}[{i}]")
            if err:
                return value, err
            out.append(v)
        return out, None
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return value, f"{key}: expected a mapping, got {value!r}"
        return dict(value), None
    if tp is bool:
        if isinstance(value, bool):
            return value, None
        return value, f"{key}: expected true/false, got {value!r}"
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, float) and value.is_integer():
            return int(value), None
        return value, f"{key}: expected an integer, got {value!r}"
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), None
        if isinstance(value, str):
            try:
                return float(value), None
            except ValueError:
                pass
        return value, f"{key}: expected a number, got {value!r}"
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value), None
        return value, f"{key}: expected a string, got {value!r}"
    return value, None


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | dict | None = None) -> C:
    """Build and validate a `cls` instance from a YAML/JSON file and overrides;
    raise `ConfigError` listing every problem."""
    source = str(path) if path else "config"
    data: dict = _read_file(path) if path else {}
    problems: list[str] = []
    if isinstance(overrides, dict):
        extra = dict(overrides)
    else:
        extra, problems = parse_overrides(list(overrides or []))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value

    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    unknown = [k for k in data if k not in fields]
    if unknown:
        valid = ", ".join(sorted(fields))
        problems.append(
            f"unknown key(s) {', '.join(map(repr, unknown))}; valid keys for {cls.__name__}: {valid}"
        )
    for key, value in data.items():
        if key not in fields:
            continue
        v, err = _coerce(value, hints[key], key)
        if err:
            problems.append(f"{err} (type {_type_name(hints[key])})")
        else:
            kwargs[key] = v
    # value checks run even when keys or types were wrong (on the valid part), so every problem shows at once
    try:
        cfg = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(problems + [str(e)], source) from None
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        problems += list(validate())
    if problems:
        raise ConfigError(problems, source)
    return cfg


def config_to_dict(cfg: Any) -> dict:
    """The config as plain JSON-able values."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
