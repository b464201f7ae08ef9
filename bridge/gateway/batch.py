"""The TOP batch protocol (`/router/batch`), as the official Java SDK's BatchTaobaoClient speaks it. Pure, no I/O.

    POST <.../router/batch>?app_key=..&format=json&sign_method=..&timestamp=..&v=2.0[&session=..]&sign=..
    Content-Type: text/plain;charset=UTF-8

    #PUBLIC#method=alibaba.campus.mc.message.sendmessagetomobile\\r\\n-S-\\r\\n
    mobile_receiver_message_event=<form-encoded JSON>\\r\\n-S-\\r\\n
    mobile_receiver_message_event=<form-encoded JSON>

- Entries (and the public line) are joined by the separator (default `\\r\\n-S-\\r\\n`, another one may be
  named in the request header `top-api-separator`); an entry without parameters is written `N`. No raw CR or
  LF can occur inside an entry (they are URL-encoded), nor inside a compact JSON response.
- The signature is the single-call one over the sorted system parameters with the whole body appended:
  md5 `MD5(secret + k1v1k2v2… + body + secret)`, hmac / hmac-sha256 `HMAC(secret, k1v1k2v2… + body)`.
- The response holds one response body per entry, in order, joined by the same separator; a batch refused
  as a whole (signature, app key, timestamp, flow control…) answers ONE error response instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.gateway.protocol import METHOD

SEPARATOR: Final = "\r\n-S-\r\n"
SEPARATOR_HEADER: Final = "top-api-separator"
PUBLIC_PREFIX: Final = "#PUBLIC#"
EMPTY_ENTRY: Final = "N"
CONTENT_TYPE: Final = "text/plain;charset=UTF-8"
PUBLIC_LINE: Final = f"{PUBLIC_PREFIX}method={METHOD}"
REST_PATH: Final = "/router/rest"
BATCH_PATH: Final = "/router/batch"
MAX_MESSAGES: Final = 50


def batch_url(rest_url: str) -> str:
    """The batch endpoint of a REST URL: its path's trailing `/router/rest` becomes `/router/batch`.

    ValueError when the path does not end with `/router/rest` (nothing to derive the batch endpoint from).
    """
    parts = urlsplit(rest_url)
    if not parts.path.endswith(REST_PATH):
        raise ValueError(f"the gateway URL's path must end with {REST_PATH} to derive {BATCH_PATH}")
    return urlunsplit(parts._replace(path=parts.path[: -len(REST_PATH)] + BATCH_PATH))


def encode_entry(params: Mapping[str, str]) -> str:
    """One call's parameters url-encoded as a query string (space as `+`), or `N` when there are none."""
    return urlencode(params) if params else EMPTY_ENTRY


def encode_body(entries: Sequence[str], *, public: str | None = PUBLIC_LINE, separator: str = SEPARATOR) -> str:
    """The batch body: the public line (when given), then the already encoded entries, joined by `separator`."""
    parts = [public, *entries] if public else list(entries)
    return separator.join(parts)


def sign_input(canonical_system: str, body: str) -> str:
    """What is signed for a batch: the canonical string of the system parameters with the body appended."""
    return canonical_system + body


def parse_body(body: str, separator: str = SEPARATOR) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(public parameters, one parameter dict per call) of a batch body; `N` is a call without parameters."""
    parts = body.split(separator) if body else []
    public: dict[str, str] = {}
    if parts and parts[0].startswith(PUBLIC_PREFIX):
        public = dict(parse_qsl(parts.pop(0)[len(PUBLIC_PREFIX) :], keep_blank_values=True))
    calls = [{} if part == EMPTY_ENTRY else dict(parse_qsl(part, keep_blank_values=True)) for part in parts]
    return public, calls


def split_responses(raw: bytes, separator: str = SEPARATOR) -> list[bytes]:
    """The per-call response bodies of a batch response, in order (one part when the batch was refused)."""
    return raw.split(separator.encode("utf-8"))


def join_responses(bodies: Sequence[bytes], separator: str = SEPARATOR) -> bytes:
    """A batch response body from per-call response bodies (the simulator's side)."""
    return separator.encode("utf-8").join(bodies)
