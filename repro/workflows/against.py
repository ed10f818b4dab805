"""How two command lines differ as options: what `repro ablate FILE.toml --against BUNDLE` turns into
cells. A pure function; the reading of bundles is the caller's."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-\.?[0-9]")  # "-1", "-0.5", "-.5": a value, not an option


def options(argv: list[str]) -> dict[str, str | None]:
    """--name=value, --name value, -n value and a bare --flag (None) of a command line, the last one
    given winning as in argparse; positional words are left out."""
    out: dict[str, str | None] = {}
    words = argv[1:]
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-") and not _NUMBER.match(word) and word != "-":
            name, eq, value = word.partition("=")
            if eq:
                out[name] = value
            elif i + 1 < len(words) and (not words[i + 1].startswith("-") or _NUMBER.match(words[i + 1])):
                out[name], i = words[i + 1], i + 1
            else:
                out[name] = None
        i += 1
    return out


def option_differences(ours: list[str], theirs: list[str], *, ignore: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """(what appended to `ours` makes its options `theirs`, ours' options that theirs leaves out: no
    appending removes them). Options in `ignore` (the seed's) are not compared."""
    mine, other = options(ours), options(theirs)
    append = [name if value is None else f"{name}={value}" for name, value in other.items()
              if name not in ignore and (name not in mine or mine[name] != value)]
    left_out = [name for name in mine if name not in ignore and name not in other]
    return append, left_out
