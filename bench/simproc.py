"""The simulated gateway as the benchmarks run it: `bridge gateway-sim` with Python's cyclic GC switched off.

The simulator keeps every accepted message (to report first-received times), so its heap grows by millions of
objects during a benchmark; with the collector on, each full collection of that heap stops it for tens to
hundreds of milliseconds — stalls that show up as gaps and catch-up bursts in the receive times the rate and
latency scenarios measure, although the bridge did nothing wrong. The benchmark runs are short and the
simulator allocates few reference cycles, so the collector is simply disabled (`--gc` keeps it on, to compare).

    python -m bench.simproc [--gc] <bridge gateway-sim arguments>
"""

from __future__ import annotations

import gc
import sys

from bridge.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--gc" in args:
        args.remove("--gc")
    else:
        gc.disable()
    raise SystemExit(main(["gateway-sim", *args]))
