"""Virtual time for asyncio tests: when the event loop would wait for its next timer, it jumps to it.

`VirtualTime(loop).install()` replaces the running loop's clock and makes its selector advance that clock by
the timeout it was asked to wait, instead of waiting. Everything driven by the loop's timers — `asyncio.sleep`,
`call_later`, `wait_for`, `asyncio.timeout` — then runs instantly and in a deterministic order, and code under
test that takes `clock=vt.time` sees the same time line. Only for pure in-process tests: there is no real I/O
to wait for, so a loop with no timer and nothing ready is a deadlock and fails loudly.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable

Events = tuple[selectors.SelectorKey, int]
DEADLOCK_GRACE_SECONDS = 5.0  # real seconds to wait for a wake-up from a thread before calling it a deadlock


class VirtualTime:
    """A virtual monotonic clock driving one selector event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, start: float = 1000.0) -> None:
        if not isinstance(loop, asyncio.SelectorEventLoop):
            raise TypeError(f"virtual time needs a SelectorEventLoop, not {type(loop).__name__}")
        self.now = start
        self._loop = loop
        self._selector: selectors.BaseSelector = loop._selector  # type: ignore[attr-defined]
        self._real_select: Callable[[float | None], list[Events]] = self._selector.select

    def time(self) -> float:
        """The virtual monotonic time (seconds)."""
        return self.now

    def wall_ms(self) -> int:
        """A wall clock in milliseconds that moves with the virtual time."""
        return 1_700_000_000_000 + int(self.now * 1000)

    def install(self) -> None:
        """Put the loop on virtual time."""
        self._loop.time = self.time  # type: ignore[method-assign]
        self._selector.select = self._select  # type: ignore[method-assign]

    def uninstall(self) -> None:
        """Give the loop its real clock and selector back."""
        del self._loop.time
        del self._selector.select

    def _select(self, timeout: float | None = None) -> list[Events]:
        events = self._real_select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # nothing scheduled: only another thread could wake us
            events = self._real_select(DEADLOCK_GRACE_SECONDS)
            if not events:
                raise RuntimeError("virtual time: the event loop has no timer and nothing ready (deadlock)")
            return events
        self.now += timeout
        return []
