"""The documentation cannot drift from the code: the option table and the worked DATA and DIRECT frames are
checked."""

from __future__ import annotations

import re
from pathlib import Path

from swarm import config
from swarm.protocol import wire

DOCS = Path(__file__).resolve().parent.parent / "docs"


def between(text: str, name: str) -> str:
    """The text between `<!-- name:start -->` and `<!-- name:end -->` (exactly one pair must exist)."""
    pattern = re.compile(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", re.DOTALL)
    found = pattern.findall(text)
    assert len(found) == 1, f"expected one {name}:start/{name}:end marker pair, found {len(found)}"
    return found[0]


def test_option_table_is_render_markdown() -> None:
    table = between((DOCS / "configuration.md").read_text(encoding="utf-8"), "options")
    expected = config.render_markdown()
    assert table == expected, (
        "docs/configuration.md's option table differs from swarm.config.render_markdown(); paste its "
        "output between the options markers")


def test_every_option_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [option.key for option in config.OPTIONS if f"`{option.key}`" not in text]
    assert not missing, f"options missing from docs/configuration.md: {missing}"


def test_protocol_worked_example_is_what_the_code_writes() -> None:
    block = between((DOCS / "protocol.md").read_text(encoding="utf-8"), "hex-example")
    documented = bytes.fromhex(block.replace("```", "").strip())
    frame = wire.encode_data(wire.encode_origin("n1"), 1_700_000_000_000_000, 3,
                             wire.encode_topic("t"), wire.encode_message({"k": 1}), 1 << 20)
    assert documented == frame


def test_protocol_direct_example_is_what_the_code_writes() -> None:
    block = between((DOCS / "protocol.md").read_text(encoding="utf-8"), "direct-example")
    documented = bytes.fromhex(block.replace("```", "").strip())
    frame = wire.encode_direct(wire.encode_origin("n2"), wire.encode_origin("n1"), 1_700_000_000_000_000, 1,
                               wire.encode_topic("t"), wire.encode_message({"k": 1}), 1 << 20,
                               1_700_000_000_000_001)
    assert documented == frame
