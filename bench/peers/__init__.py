"""Peers the bridge is compared with, doing the same job against the same stand-in (bench/fast.py)."""
