"""Steering (issue 10): choose one of the four network modes (DESIGN.md) from measured
path health and apply it. ``policy`` is the decision, a pure function of recorded probe
results (tested without a network); probes, routes and the loop come next."""
