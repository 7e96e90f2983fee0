"""How every ``a3d`` parser reads: plain-text descriptions (the module docstrings, whole, without
reST markup) and every option's default shown, through one parser class used for all subcommands."""

from __future__ import annotations

import argparse
import re
import textwrap

_ROLE = re.compile(r":[\w:]+:`~?([^`]+)`")  # :func:`a3d.x` -> a3d.x
_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")  # ``x`` and `x` -> x


def plain(text: str | None) -> str | None:
    """``text`` without reST roles and literal quotes; ``::`` at a line end becomes ``:``."""
    if text is None:
        return None
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(lambda m: m.group(1) or m.group(2), text)
    return re.sub(r"::$", ":", text, flags=re.M).strip()


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (paragraphs and example lines kept; a line wider than the terminal is
    wrapped), and ``(default: X)`` after every option help that does not already state its default
    (flags and unset options have none)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            lines += textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent) or [""]
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = _LITERAL.sub(lambda m: m.group(1) or m.group(2), action.help or "")
        default = action.default
        if ("default" in text or default is None or isinstance(default, bool) or default == argparse.SUPPRESS
                or (isinstance(default, (list, tuple)) and not default)):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class A3DParser(argparse.ArgumentParser):
    """ArgumentParser with :class:`HelpFormatter` and plain-text description and epilog; subparsers
    made by ``add_subparsers`` are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        for key in ("description", "epilog"):
            kwargs[key] = plain(kwargs.get(key))
        super().__init__(*args, **kwargs)
