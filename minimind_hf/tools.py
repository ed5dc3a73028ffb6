"""Tools a model can call: typed, documented Python functions in a registry, picked by name.

A tool is a plain function with type hints and a Google-style docstring (the convention
``transformers.utils.get_json_schema`` reads), so the same function serves ``apply_chat_template(tools=[f])``,
trl's ``GRPOTrainer(tools=[f])``, our rollouts (`minimind_hf.native.rollout`) and the chat front ends::

    from minimind_hf.tools import get_tools, run_tool_call, tool_schemas
    tools = get_tools(["calculator", "unit_convert"])  # {name: function}; a wrong name lists the valid ones
    tool_schemas(tools)                                  # OpenAI-style schemas for the chat template
    run_tool_call(tools, "calculator", '{"expression": "12 * (3 + 4)"}')   # -> "84"

`run_tool_call` never raises: an unknown tool, bad arguments or a tool that fails give an error text as the
response (``"error: ..."``), which is what the model sees, so one bad call cannot stop a rollout.

Built-ins (deterministic, in the spirit of the original MiniMind's mock tools): ``calculator`` (a safe
arithmetic evaluator over the parsed expression tree, never ``eval``; sizes and exponents bounded),
``unit_convert`` (length, mass, time, temperature), ``lookup`` (a small fixed fact table) and ``current_time``
(a fixed clock, so rollouts are reproducible).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "TOOLS",
    "ToolError",
    "calculator",
    "current_time",
    "get_tools",
    "lookup",
    "register_tool",
    "run_tool_call",
    "tool_schemas",
    "unit_convert",
]

TOOLS: dict[str, Callable[..., Any]] = {}


class ToolError(ValueError):
    """A tool's own "cannot do that" (bad input); its message becomes the tool response."""


def register_tool(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add `fn` to the registry under its name (its docstring and type hints are its schema)."""
    TOOLS[fn.__name__] = fn
    return fn


def get_tools(names: Sequence[str] | str) -> dict[str, Callable[..., Any]]:
    """``{name: function}`` for the registered tools `names`; a wrong name is a `KeyError` listing the valid
    ones."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise KeyError(f"unknown tool(s) {unknown}; valid: {', '.join(sorted(TOOLS))}")
    return {n: TOOLS[n] for n in names}


def tool_schemas(tools: Mapping[str, Callable[..., Any]]) -> list[dict]:
    """OpenAI-style ``{"type": "function", "function": {...}}`` schemas (transformers'
    ``get_json_schema``)."""
    from transformers.utils import get_json_schema

    return [get_json_schema(fn) for fn in tools.values()]


MAX_RESPONSE_CHARS = 1000


def run_tool_call(tools: Mapping[str, Callable[..., Any]], name: str, arguments: str | dict | None) -> str:
    """Call tool `name` with `arguments` (a JSON object or its text); the response text, or
    ``"error: ..."``."""
    fn = tools.get(name)
    if fn is None:
        return f"error: unknown tool {name!r}; available: {', '.join(tools) or 'none'}"
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            return f"error: arguments are not JSON ({e.msg})"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return "error: arguments must be a JSON object"
    try:
        result = fn(**arguments)
    except TypeError as e:  # missing / unexpected arguments
        return f"error: bad arguments for {name}: {e}"
    except (ToolError, ValueError, ArithmeticError) as e:
        return f"error: {e}"
    except Exception as e:  # noqa: BLE001 - a user's tool must not stop the rollout
        logger.warning("tool %s raised %s: %s", name, type(e).__name__, e)
        return f"error: {name} failed ({type(e).__name__})"
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
    return text[:MAX_RESPONSE_CHARS]


# ------------------------------------------------------------------------------ calculator
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION_CHARS = 200
MAX_NODES = 100
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e15


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent {right} is too large (at most {MAX_EXPONENT})")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise ToolError("division by zero")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
            raise ToolError("the result is out of range")
        return value
    raise ToolError(
        f"unsupported expression element {type(node).__name__}; use numbers, + - * / // % ** and ()"
    )


def _format_number(value: float | int) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolError("the result is not a finite number")
        if value.is_integer():
            return str(int(value))
        return f"{value:.10g}"
    return str(value)


@register_tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: The expression to evaluate, e.g. "12 * (3 + 4)". Numbers, + - * / // % ** and parentheses.
    """
    text = str(expression).replace("×", "*").replace("÷", "/").replace("^", "**")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot parse {expression!r} as arithmetic") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError("the expression is too long")
    return _format_number(_evaluate(tree))


# ------------------------------------------------------------------------------ mock tools
_UNITS = {  # unit -> (dimension, factor to the base unit)
    "mm": ("length", 0.001),
    "cm": ("length", 0.01),
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "inch": ("length", 0.0254),
    "foot": ("length", 0.3048),
    "mile": ("length", 1609.344),
    "g": ("mass", 0.001),
    "kg": ("mass", 1.0),
    "t": ("mass", 1000.0),
    "pound": ("mass", 0.45359237),
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
    "day": ("time", 86400.0),
}
_TEMPERATURES = ("c", "f", "k")


def _to_celsius(value: float, unit: str) -> float:
    return {"c": value, "f": (value - 32) * 5 / 9, "k": value - 273.15}[unit]


def _from_celsius(value: float, unit: str) -> float:
    return {"c": value, "f": value * 9 / 5 + 32, "k": value + 273.15}[unit]


@register_tool
def unit_convert(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity between units of length, mass, time or temperature.

    Args:
        value: The number to convert.
        from_unit: The unit of the value: mm, cm, m, km, inch, foot, mile, g, kg, t, pound, s, min, h, day,
            C, F or K.
        to_unit: The unit to convert to (same dimension as from_unit).
    """
    a, b = str(from_unit).strip().lower(), str(to_unit).strip().lower()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ToolError(f"value must be a number, got {value!r}")
    if a in _TEMPERATURES and b in _TEMPERATURES:
        return _format_number(round(_from_celsius(_to_celsius(float(value), a), b), 6))
    if a not in _UNITS or b not in _UNITS:
        bad = a if a not in _UNITS else b
        raise ToolError(f"unknown unit {bad!r}; known: {', '.join([*_UNITS, 'C', 'F', 'K'])}")
    if _UNITS[a][0] != _UNITS[b][0]:
        raise ToolError(f"cannot convert {_UNITS[a][0]} ({a}) to {_UNITS[b][0]} ({b})")
    return _format_number(round(float(value) * _UNITS[a][1] / _UNITS[b][1], 9))


_FACTS = {
    "capital of china": "Beijing",
    "capital of france": "Paris",
    "capital of japan": "Tokyo",
    "capital of the united kingdom": "London",
    "boiling point of water": "100 C at sea level",
    "speed of light": "299792458 m/s",
    "days in a week": "7",
    "中国的首都": "北京",
    "法国的首都": "巴黎",
    "一周的天数": "7",
}


@register_tool
def lookup(query: str) -> str:
    """Look a fact up in a small fixed table (capitals, a few constants).

    Args:
        query: What to look up, e.g. "capital of France".
    """
    key = " ".join(str(query).strip().lower().rstrip("?？").split())
    if key in _FACTS:
        return _FACTS[key]
    raise ToolError(f"no entry for {query!r}")


FIXED_TIME = "2025-06-01 12:00:00"


@register_tool
def current_time() -> str:
    """Return the current date and time (a fixed clock, so that runs are reproducible)."""
    return FIXED_TIME
