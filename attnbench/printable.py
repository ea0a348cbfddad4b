"""Text from files, paths and plug-ins made safe to print: it is data, never terminal control or Rich markup.

A run directory, a data set's name in a summary.json or a plug-in's paper line can hold anything: an escape
sequence (ANSI colours, an OSC title change), a newline that splits a row, Rich markup (``[/]`` ends in a
MarkupError, ``[bold red]`` disappears). Everything that prints such text passes it through ``printable``
(plain output: stderr lines, markdown) or ``markup`` (what Rich renders: console lines, tables, captions).
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape


def _shown(char: str) -> str:
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


# C0 and C1 controls, DEL, and the format characters that reorder or hide text (bidirectional overrides and
# isolates, zero-width characters): each is shown as its escape, so the text stays recognisable and inert
_UNSAFE = {code: _shown(chr(code)) for code in (*range(0x20), *range(0x7F, 0xA0))}
_UNSAFE.update({code: _shown(chr(code)) for code in range(0x200B, 0x2070) if unicodedata.category(chr(code)) == "Cf"})
_UNSAFE.update({0xFEFF: "\\ufeff"})


def printable(text: object) -> str:
    """``text`` on one line with every control and invisible formatting character shown as its escape
    (``\\n``, ``\\x1b``, ``\\u202e``): nothing in it moves the cursor, changes colours or retitles the terminal."""
    return str(text).translate(_UNSAFE)


def markup(text: object) -> str:
    """``printable(text)`` with Rich markup escaped, for ``console.print`` and rich tables: ``[v2]`` prints
    as ``[v2]``."""
    return escape(printable(text))
