"""Text for people and JSON for programs, made safe: what the CLI and the server print."""
from __future__ import annotations

import math

_CONTROL = dict.fromkeys([*range(0x20), 0x7F, *range(0x80, 0xA0)])


def shown(text) -> str:
    """``text`` for a terminal: control characters (escape sequences, newlines, carriage
    returns) written as \\xNN, so a file name cannot clear the screen or fake output lines;
    undecodable bytes of a name (surrogate escapes) as \\udcNN."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if (ord(c) in _CONTROL or 0xD800 <= ord(c) < 0xE000)
                   else c for c in text)


def json_safe(value):
    """``value`` with every non-finite float as None, so that --json output is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
