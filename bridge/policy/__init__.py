"""Notification hygiene: what rule policies decide, where their state lives, and how they meet delivery.

    decide      pure decisions of (state, message, now): dedupe, quiet hours, limit, digest
    store       the state: in this process (`MemoryPolicyStore`) or shared through Redis (`RedisPolicyStore`)
    stage       between the pipeline and delivery: decide, then send, drop, defer or fold (async, ordered)
    deferred    the deferred topic's records: what a deferred message or digest item carries (pure codec)
    digest      a digest's summary message from its folded items (pure)
    dryrun      `bridge map --now` / `bridge test`: the same decisions on a virtual clock, digests included
The policies themselves are parsed with the rules (`bridge.rules.policies`).
"""
