"""Tests of bridge.gateway: signing, classifier, client, simulated gateway and their CLI commands."""
