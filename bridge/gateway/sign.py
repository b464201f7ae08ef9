"""The TOP request signature (md5, hmac = HMAC-MD5, hmac-sha256). Pure, no I/O.

1. Every parameter except `sign` (system and business, query and body alike), empty values dropped.
2. Sorted by name (byte order; Python's code-point order is the same for UTF-8).
3. `name + value` concatenated with no separators, raw (not URL-encoded), UTF-8.
4. md5: MD5(secret + S + secret); hmac: HMAC-MD5(secret, S); hmac-sha256: HMAC-SHA256(secret, S).
5. Upper-case hex.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any, Literal

SignMethod = Literal["md5", "hmac", "hmac-sha256"]


def canonical_string(params: Mapping[str, str]) -> str:
    """The string that is signed: sorted `name+value` pairs, `sign` and empty values left out."""
    return "".join(k + v for k, v in sorted(params.items()) if v and k != "sign")


class CanonicalTemplate:
    """The canonical string of fixed parameters plus per-call ones, sorted once (for the hot path).

    `render(*values)` takes the per-call values in the order of `dynamic`; they must be non-empty.
    """

    __slots__ = ("_order", "_pieces", "_tail")

    def __init__(self, static: Mapping[str, str], dynamic: Sequence[str]) -> None:
        clash = set(static) & set(dynamic)
        if clash:
            raise ValueError(f"parameters both static and per call: {sorted(clash)}")
        names = sorted([*(k for k, v in static.items() if v and k != "sign"), *dynamic])
        pieces: list[str] = []
        order: list[int] = []
        current = ""
        for name in names:
            if name in dynamic:
                pieces.append(current + name)
                order.append(dynamic.index(name))
                current = ""
            else:
                current += name + static[name]
        self._pieces = tuple(pieces)
        self._order = tuple(order)
        self._tail = current

    def render(self, *values: str) -> str:
        """The canonical string with `values` in place; equal to `canonical_string` of all parameters."""
        out: list[str] = []
        for piece, slot in zip(self._pieces, self._order, strict=True):
            value = values[slot]
            if not value:
                raise ValueError("per-call parameter values must not be empty")
            out.append(piece)
            out.append(value)
        out.append(self._tail)
        return "".join(out)


class Signer:
    """Signs with one secret and method; keyed state is built once and copied per call (cheap)."""

    __slots__ = ("_base", "_method", "_suffix")

    def __init__(self, secret: str, method: str) -> None:
        key = secret.encode("utf-8")
        base: Any
        if method == "md5":
            base = hashlib.md5(key, usedforsecurity=False)
            self._suffix = key
        elif method == "hmac":
            base = hmac.new(key, digestmod=hashlib.md5)
            self._suffix = b""
        elif method == "hmac-sha256":
            base = hmac.new(key, digestmod=hashlib.sha256)
            self._suffix = b""
        else:
            raise ValueError(f"unknown sign_method {method!r} (expected md5, hmac or hmac-sha256)")
        self._base = base
        self._method = method

    @property
    def method(self) -> str:
        """The sign_method value this signer implements."""
        return self._method

    def sign_canonical(self, canonical: str) -> str:
        """Upper-case hex signature of an already built canonical string."""
        h = self._base.copy()
        h.update(canonical.encode("utf-8"))
        if self._suffix:
            h.update(self._suffix)
        return str(h.hexdigest()).upper()

    def sign(self, params: Mapping[str, str]) -> str:
        """Upper-case hex signature of a parameter mapping."""
        return self.sign_canonical(canonical_string(params))


def sign(params: Mapping[str, str], secret: str, method: str) -> str:
    """Sign `params` (all request parameters; `sign` itself is ignored) with `secret` by `method`."""
    return Signer(secret, method).sign(params)


def verify(params: Mapping[str, str], secret: str) -> bool:
    """Whether `params["sign"]` is the right signature for `params` under their own `sign_method`."""
    given = params.get("sign", "")
    try:
        expected = sign(params, secret, params.get("sign_method", "md5"))
    except ValueError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.upper().encode("utf-8"))
