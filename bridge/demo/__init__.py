"""The demo: a local stack (broker, simulated gateway, bridge) fed by a generator of realistic campus events."""
