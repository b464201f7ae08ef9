"""The error tree of campus-bridge.

    BridgeError                      base of everything the bridge raises on purpose
    ├── ConfigError                  the config file or a rule file is wrong (exit status 2)
    │     carries a list of ConfigIssue(file, path, message, line)
    ├── GatewayError                 raised only inside the gateway client; callers get Outcomes
    ├── QuotaStoreError              Redis of the shared quota failed or timed out (the limiter degrades)
    └── ShutdownError                the daemon could not drain in time

Decisions about a delivery (retry, dead-letter, pause) are not exceptions: they are Outcome values made by
one pure classifier (`bridge.gateway.classify`). Mapping problems are values too (`bridge.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass


class BridgeError(Exception):
    """Base class of the bridge's own errors."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One precise problem in a configuration or rule file."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(BridgeError):
    """The configuration cannot be used; `issues` says exactly where and why."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class GatewayError(BridgeError):
    """An error inside the gateway client (translated into an Outcome before it leaves the client)."""


class QuotaStoreError(BridgeError):
    """A round trip to the shared quota's Redis failed or timed out; `op` names the operation."""

    def __init__(self, op: str, cause: str) -> None:
        self.op = op
        self.cause = cause
        super().__init__(f"shared quota: Redis {op} failed: {cause}")


class ShutdownError(BridgeError):
    """Draining did not finish within the shutdown timeout."""
