"""Fault-injection suite: real uvicorn servers, real Redis processes, real WebSocket clients.

Run it with ``pytest tests/faults`` (see ``docs/reliability.md``).
"""
