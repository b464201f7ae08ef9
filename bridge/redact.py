"""Scrubbing secrets from text that leaves the process: config errors, log lines, CLI output, dead-letter headers.

One function does it everywhere, `redact(text)`:
- the value of a secret-bearing URL query parameter (`session=`, `sign=`, `app_secret=`, `password=` …) is
  replaced by `********`, whatever the value: error texts of HTTP libraries quote the full request URL;
- every secret value the process knows is replaced by `********` too (as written, and URL-encoded). The
  secrets of each config loaded by `bridge.settings.load_settings` are registered here (`register`), so a
  secret echoed by any library, in any text, is caught at the boundary.

Values shorter than `MIN_SECRET_LENGTH` are not registered: replacing every `ab` in every log line would
destroy the logs, and such a value is no secret anyway (the URL parameters are scrubbed whatever their length).
The registry is process-wide on purpose: log formatters and dead-letter headers have no settings at hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from bridge.settings import Settings

MASK: Final = "********"
MIN_SECRET_LENGTH: Final = 6

# Query/form parameters whose value is a credential or derived from one (TOP: session, sign).
SECRET_PARAMS: Final = (
    "session",
    "sign",
    "app_secret",
    "secret",
    "access_token",
    "refresh_token",
    "token",
    "password",
    "passwd",
    "sasl_password",
)
_PARAM_RE: Final = re.compile(r"(?i)(?<![A-Za-z0-9_])((?:" + "|".join(SECRET_PARAMS) + r")=)[^&#\s'\"<>\\]+")


class Redactor:
    """Replaces known secret values and secret URL parameters in text; `add()` learns more values."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._values: set[str] = set()
        self._values_re: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Learn secret values (their URL-encoded forms too); empty and too short values are ignored."""
        new = set()
        for secret in secrets:
            if secret is None or len(secret) < MIN_SECRET_LENGTH:
                continue
            new |= {secret, quote_plus(secret), quote(secret, safe="")}
        if new - self._values:
            self._values |= new
            # Longest first, so a value containing another is replaced whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._values_re = re.compile("|".join(re.escape(v) for v in ordered))

    def __call__(self, text: str) -> str:
        """`text` with every secret parameter value and every known secret value replaced by `********`."""
        if "=" in text:
            text = _PARAM_RE.sub(r"\1" + MASK, text)
        if self._values_re is not None:
            text = self._values_re.sub(MASK, text)
        return text

    def value(self, obj: Any) -> Any:
        """Redact every text inside a nested value (dicts, lists, tuples); other values are kept."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj


_PROCESS: Final = Redactor()


def redact(text: str) -> str:
    """Scrub `text` with the process-wide redactor (the URL parameters and every registered secret)."""
    return _PROCESS(text)


def redact_value(obj: Any) -> Any:
    """Scrub every text inside a nested value with the process-wide redactor."""
    return _PROCESS.value(obj)


def register(*secrets: str | None) -> None:
    """Teach the process-wide redactor more secret values."""
    _PROCESS.add(*secrets)


def settings_secrets(settings: Settings) -> list[str]:
    """The secret values of a loaded config (app secret, session, SASL password)."""
    found = [settings.gateway.secret()]
    for secret in (settings.gateway.session, settings.kafka.security.sasl_password):
        if secret is not None:
            found.append(secret.get_secret_value())
    return [s for s in found if s]
