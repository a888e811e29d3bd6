"""The Django project the benchmark's servers run: one ASGI app, one variant per process."""
