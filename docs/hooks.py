"""MkDocs hook: render the Sphinx roles of the package's docstrings in the API reference.

The docstrings follow Django's reST habits (``:class:`~django_presence.x.Y```), which
mkdocstrings renders literally as ``:class:<code>~django_presence.x.Y</code>``. This turns
each into ``<code>Y</code>``, linked to the object's API entry when it has one.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(
    r":(?P<role>class|meth|func|data|attr|exc|mod):<code>(?P<tilde>~?)(?P<target>[\w.]+)</code>"
)


def _render(match: re.Match[str]) -> str:
    target = match["target"]
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    if match["role"] in ("meth", "func"):
        shown += "()"
    code = f"<code>{shown}</code>"
    if target.startswith("django_presence."):
        # Resolved by mkdocs-autorefs after every page is rendered; left as plain code
        # when the object has no entry.
        return f'<autoref identifier="{target}" optional>{code}</autoref>'
    return code


def on_page_content(html: str, **kwargs: Any) -> str:
    """Rewrite the roles of one rendered page."""
    return _ROLE.sub(_render, html)
