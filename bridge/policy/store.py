"""Where policy state lives: the store port, and the in-process store (one instance, or a fallback).

A store applies `bridge.policy.decide.decide` to the state of one message's keys and writes the updates back
atomically (for one message, no other decision sees half of them). `MemoryPolicyStore` keeps the state in a
dict of this process; `bridge.policy.redis_store.RedisPolicyStore` keeps it in Redis for every instance.
Entries expire when the decision says they stop mattering, so memory is bounded by the recipients active
within the longest window.
"""

from __future__ import annotations

import heapq
from typing import Any, Protocol

from bridge.policy.decide import Decision, Subject, decide, state_keys
from bridge.rules.policies import RulePolicy


class PolicyStore(Protocol):
    """What the policy stage needs of a store."""

    async def start(self) -> None:
        """Connect (never fails for an outage: decisions fall back)."""
        ...

    async def close(self) -> None:
        """Close connections (idempotent)."""
        ...

    async def decide(self, policy: RulePolicy, subject: Subject, now_ms: int) -> Decision:
        """Decide for `subject` at `now_ms` and record the state the decision changes."""
        ...


class MemoryPolicyStore:
    """Policy state in this process: a dict of (value, expires at) with a heap to drop expired entries."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[Any, int]] = {}
        self._expiry: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._data)

    async def start(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to close."""

    async def decide(self, policy: RulePolicy, subject: Subject, now_ms: int) -> Decision:
        """See `decide_now` (no I/O: the answer is immediate)."""
        return self.decide_now(policy, subject, now_ms)

    def decide_now(self, policy: RulePolicy, subject: Subject, now_ms: int) -> Decision:
        """Decide for `subject` at `now_ms`, apply the updates, drop what expired."""
        self._prune(now_ms)
        states = {}
        for key in state_keys(policy, subject).all():
            found = self._data.get(key)
            if found is not None and found[1] > now_ms:
                states[key] = found[0]
        updates, decision = decide(policy, states, subject, now_ms)
        for key, (value, expires) in updates.items():
            if expires <= now_ms:
                self._data.pop(key, None)
                continue
            self._data[key] = (value, expires)
            heapq.heappush(self._expiry, (expires, key))
        return decision

    def _prune(self, now_ms: int) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= now_ms:
            _, key = heapq.heappop(heap)
            found = self._data.get(key)
            if found is not None and found[1] <= now_ms:
                del self._data[key]
