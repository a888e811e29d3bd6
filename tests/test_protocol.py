"""``docs/protocol.md`` documents exactly the vocabulary ``django_presence.protocol`` defines.

The tables of error and close codes, and the headings of the client and server frames,
are read from the page and compared with the module, so neither can change alone.
"""

from __future__ import annotations

import re
from pathlib import Path

from django_presence import protocol

PAGE = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


def _section(title: str) -> str:
    """The text of the section whose heading is ``title``, up to the next heading."""
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^#{{2,3}} |\Z)", PAGE, re.M | re.S)
    assert match, f"no section {title!r} in docs/protocol.md"
    return match.group(2)


def _first_column(section: str) -> list[str]:
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [row.split("|")[1].strip().strip("`") for row in rows[1:]]  # header row first


def _frame_headings(section: str) -> list[str]:
    return re.findall(r"^#### `([a-z_]+)`", section, re.M)


def test_the_error_code_table_lists_every_error_code_in_order() -> None:
    assert _first_column(_section("Error codes")) == list(protocol.ERROR_CODES)


def test_the_close_code_table_lists_every_close_code() -> None:
    documented = [int(code) for code in _first_column(_section("Close codes"))]
    assert documented == sorted(protocol.CLOSE_CODES)


def test_every_request_type_has_its_section_and_a_handler() -> None:
    from django_presence.consumers import UserConsumer

    assert _frame_headings(_section("Client to server")) == list(protocol.REQUEST_TYPES)
    for request_type in protocol.REQUEST_TYPES:
        assert callable(getattr(UserConsumer, f"request_{request_type}"))


def test_every_frame_the_server_sends_is_documented() -> None:
    documented = set(_frame_headings(_section("Server to client")))
    # Replies are documented with their request ("`ping` -> `pong`"), ack in "Frames".
    replies = set(re.findall(r"^#### `[a-z_]+` -> `([a-z_]+)`", PAGE, re.M))
    assert '{"type": "ack"' in PAGE
    assert documented | replies | {protocol.ACK} == set(protocol.SERVER_FRAME_TYPES)


def test_every_channel_layer_event_is_named_in_the_extension_section() -> None:
    section = _section("Extending the protocol")
    assert set(re.findall(r"`(presence\.[a-z_]+)`", section)) == set(protocol.EVENT_TYPES)


def test_the_token_subprotocol_is_the_documented_one() -> None:
    assert f'["{protocol.TOKEN_SUBPROTOCOL}", token]' in PAGE
