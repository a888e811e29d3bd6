"""The benchmark's user model and counters."""
