"""Reliability suite: real faults (store trouble, concurrent processes, a collector that goes away)."""
