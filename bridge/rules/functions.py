"""The custom JMESPath functions rules may call, beside the standard ones.

- `to_millis(v)`: epoch milliseconds from epoch ms, epoch seconds (< 10^11), digit text, or ISO-8601 text
  with an offset; null if `v` is none of those.
- `lower(s)`, `upper(s)`: the text in lower / upper case; null stays null.
- `default(v, fallback)`: `v`, unless it is null or empty text: then `fallback`.
- `mask(s)`: a phone number for display, `13312345678` -> `133****5678`; numbers are read as text.

Unlike JMESPath's `||`, `default` keeps `false`, `0`, `[]` and `{}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from jmespath import functions

from bridge.rules.coerce import RenderError, mask_phone, number_text, parse_millis

_F = TypeVar("_F", bound=Callable[..., Any])


def _signature(*arguments: dict[str, Any]) -> Callable[[_F], _F]:
    decorate: Callable[[_F], _F] = functions.signature(*arguments)
    return decorate


class RuleFunctions(functions.Functions):  # type: ignore[misc]  # jmespath ships no type hints
    """Standard JMESPath functions plus `to_millis`, `lower`, `upper`, `default` and `mask`."""

    @_signature({"types": []})
    def _func_to_millis(self, value: Any) -> int | None:
        try:
            return parse_millis(value)
        except RenderError:
            return None

    @_signature({"types": ["string", "null"]})
    def _func_lower(self, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @_signature({"types": ["string", "null"]})
    def _func_upper(self, value: str | None) -> str | None:
        return None if value is None else value.upper()

    @_signature({"types": []}, {"types": []})
    def _func_default(self, value: Any, fallback: Any) -> Any:
        return fallback if value is None or value == "" else value

    @_signature({"types": ["string", "number", "null"]})
    def _func_mask(self, value: str | float | None) -> str | None:
        if value is None:
            return None
        return mask_phone(value if isinstance(value, str) else number_text(value))


def function_names() -> frozenset[str]:
    """Every function name a rule expression may call."""
    return frozenset(RuleFunctions.FUNCTION_TABLE)


def arity_problem(name: str, given: int) -> str | None:
    """Why calling `name` with `given` arguments is wrong, or None if it is fine (or unknown)."""
    spec = RuleFunctions.FUNCTION_TABLE.get(name)
    if spec is None:
        return None
    signature = spec["signature"]
    if signature and signature[-1].get("variadic"):
        if given < len(signature):
            return f"{name}() takes at least {len(signature)} arguments, got {given}"
    elif given != len(signature):
        return f"{name}() takes {len(signature)} argument{'s' if len(signature) != 1 else ''}, got {given}"
    return None
