"""Every code example in ``docs/*.md`` runs here, so that the documentation cannot rot.

The convention, by the fence's info string (write new examples to fit one of these):

- ````` ```python ````` (no title): a *runnable* example. The blocks of one page run in
  order, in one namespace, in the test project (``tests.settings``, a test database, once
  per shipped backend). Top-level ``await`` is allowed: such a block runs in its own event
  loop. Make each page's examples self-contained (create the users they use).
- ````` ```python title="some/file.py" `````: a fragment of *your* project's files (models,
  ``asgi.py``, a consumer...). It is compiled, and its ``import`` statements are executed,
  so every name it imports from the package (or from Django, Channels...) must exist.
  A fragment titled ``settings.py`` is executed as a whole, and the ``DJANGO_PRESENCE`` it
  defines, if any, must pass the package's system checks without errors.
- ````` ```javascript ````` / ````` ```js `````: syntax-checked with ``node --check``.
- ````` ```console `````: each line ``python manage.py check ...`` or
  ``python manage.py presence ...`` is run with ``call_command`` in the test project; other
  commands (``pip install``, servers) are not run.
- Any other language (``toml``, ``yaml``, ``text``...) is not run.

The last test builds the site with ``mkdocs build --strict`` (warnings are errors).
"""

from __future__ import annotations

import ast
import asyncio
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Error
from django.core.management import call_command
from django.test import override_settings

from django_presence.checks import check_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytestmark = pytest.mark.django_db(transaction=True)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_TITLE = re.compile(r'title="([^"]*)"')


@dataclass
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # 1-based line of the opening fence
    language: str
    title: str | None
    code: str

    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, dedented to their fence's indentation."""
    blocks = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        start = i
        body = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""
        ):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if i >= len(lines):
            raise AssertionError(f"docs/{path.name}:{start + 1}: unclosed code fence")
        i += 1
        language = info.split()[0].lstrip(".").lower() if info else ""
        title = _TITLE.search(info)
        blocks.append(
            Block(
                path.name, start + 1, language, title.group(1) if title else None, "\n".join(body)
            )
        )
    return blocks


PAGES = sorted(DOCS.glob("*.md"))
ALL_BLOCKS = [block for page in PAGES for block in code_blocks(page)]


def _compile(block: Block) -> Any:
    try:
        return compile(block.code, block.where(), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as e:
        pytest.fail(f"{block.where()}: the example is not valid Python: {e}")


def _run(block: Block, namespace: dict[str, Any]) -> None:
    code = _compile(block)
    try:
        result = eval(code, namespace)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except Exception as e:
        raise AssertionError(
            f"{block.where()}: the example failed at its line {_failing_line(e, block)}: {e!r}"
        ) from e


def _failing_line(error: BaseException, block: Block) -> str:
    lines = block.code.splitlines()
    found = "?"
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if frame.f_code.co_filename == block.where() and 0 < lineno <= len(lines):
            found = f"{lineno} ({lines[lineno - 1].strip()!r})"
    return found


def _run_imports(block: Block) -> None:
    tree = ast.parse(block.code)
    imports: list[ast.stmt] = [
        node
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and all(_installed(a.name) for a in node.names))
        or (isinstance(node, ast.ImportFrom) and node.level == 0 and _installed(node.module))
    ]
    try:
        exec(compile(ast.Module(body=imports, type_ignores=[]), block.where(), "exec"), {})
    except ImportError as e:
        raise AssertionError(f"{block.where()}: an import of the example fails: {e}") from e


# The package and what it builds on must import; any other top-level module that is not
# installed here is the reader's own project (myproject, consultations...) and is skipped.
_ALWAYS = frozenset({"django_presence", "django", "channels", "channels_redis", "asgiref", "jwt"})


def _installed(module: str | None) -> bool:
    import importlib.util

    root = (module or "").split(".")[0]
    if root in _ALWAYS:
        return True
    return root != "tests" and importlib.util.find_spec(root) is not None


def test_the_docs_have_runnable_examples() -> None:
    runnable = [b for b in ALL_BLOCKS if b.language == "python" and b.title is None]
    assert PAGES, "no docs/*.md found"
    assert len(runnable) >= 10, [b.where() for b in runnable]


@pytest.fixture
def own_signal_receivers() -> Iterator[None]:
    """Disconnect, after the test, the receivers an example connected to the signals.

    A receiver left connected would run in every later test of the session (one in the
    tutorial raises for users it never saw come online), until garbage collection
    happens to free it: an order- and GC-dependent failure elsewhere.
    """
    from django_presence import signals

    watched = [signals.user_online, signals.user_offline]
    saved = [list(signal.receivers) for signal in watched]
    try:
        yield
    finally:
        for signal, receivers in zip(watched, saved, strict=True):
            with signal.lock:
                signal.receivers = receivers
                signal.sender_receivers_cache.clear()


@pytest.mark.parametrize("page", [p.name for p in PAGES])
def test_runnable_examples_run(
    page: str, presence: dict[str, Any], own_signal_receivers: None
) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs.{page[:-3]}"}
    for block in code_blocks(DOCS / page):
        if block.language == "python" and block.title is None:
            _run(block, namespace)


@pytest.mark.parametrize(
    "block",
    [b for b in ALL_BLOCKS if b.language == "python" and b.title is not None],
    ids=lambda b: f"{b.page}:{b.line}",
)
def test_file_fragments_compile_and_their_imports_exist(block: Block) -> None:
    _compile(block)
    _run_imports(block)
    if Path(block.title or "").name == "settings.py":
        namespace: dict[str, Any] = {}
        _run(block, namespace)
        if "DJANGO_PRESENCE" in namespace:
            with override_settings(DJANGO_PRESENCE=namespace["DJANGO_PRESENCE"]):
                errors = [m for m in check_settings() if isinstance(m, Error)]
            assert not errors, f"{block.where()}: {errors}"


@pytest.mark.parametrize(
    "block",
    [b for b in ALL_BLOCKS if b.language in ("javascript", "js")],
    ids=lambda b: f"{b.page}:{b.line}",
)
def test_javascript_examples_parse(block: Block, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed to check the docs' JavaScript examples")
    script = tmp_path / "example.mjs"
    script.write_text(block.code)
    result = subprocess.run(
        [node, "--check", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{block.where()}: {result.stderr}"


_MANAGE = re.compile(r"^(?:\$\s*)?python[0-9.]* manage\.py (?P<args>(?:check|presence)\b.*)$")


@pytest.mark.parametrize(
    "block",
    [b for b in ALL_BLOCKS if b.language in ("console", "shell", "bash", "sh")],
    ids=lambda b: f"{b.page}:{b.line}",
)
def test_management_commands_in_the_docs_run(block: Block, presence: dict[str, Any]) -> None:
    for line in block.code.splitlines():
        match = _MANAGE.match(line.split("#")[0].strip())
        if match is None:
            continue
        out = io.StringIO()
        try:
            call_command(*shlex.split(match["args"]), stdout=out, stderr=out)
        except Exception as e:
            raise AssertionError(f"{block.where()}: {line!r} failed: {e!r}") from e


def test_the_checks_page_lists_exactly_the_checks_of_checks_py() -> None:
    import django_presence.checks

    ids = re.compile(r"django_presence\.[EW]\d{3}")
    source = set(ids.findall(Path(django_presence.checks.__file__).read_text()))
    table = {
        line.split("|")[1].strip().strip("`")
        for line in (DOCS / "checks.md").read_text().splitlines()
        if ids.match(line.split("|")[1].strip().strip("`") if line.count("|") > 2 else "")
    }
    assert table == source


def test_the_settings_page_documents_every_setting() -> None:
    from django_presence.conf import DEFAULTS

    page = (DOCS / "settings.md").read_text()
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", page, re.M))
    assert sorted(set(DEFAULTS) - rows) == [], "settings missing from docs/settings.md"
    assert sorted(rows - set(DEFAULTS)) == [], "docs/settings.md documents unknown settings"


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    import importlib.util

    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
        if importlib.util.find_spec(name.split(".")[0]) is None
        or importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: pip install -e '.[test]' "
            "(the docs site must build; this test never skips)"
        )
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "index.html").exists()
    api = (tmp_path / "api" / "index.html").read_text()
    assert 'id="django_presence.services.online.UserOnlineService"' in api
    # The docstrings' Sphinx roles are rendered (docs/hooks.py), not shown as written.
    assert not re.search(r":(class|meth|func|data|attr):<code>", api)
