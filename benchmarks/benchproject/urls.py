"""No HTTP views: the servers answer the harness from a plain ASGI app (see asgi.py)."""

urlpatterns: list[object] = []
