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


_ITEM = re.compile(r"\s*[-*] ")  # a list item starts a paragraph of its own


def _lead(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _paragraphs(text: str) -> list[str]:
    """Prose lines joined into paragraphs (so they are wrapped to the terminal, not to the docstring's
    width); indented lines (examples) and list items start their own; "" marks a blank line."""
    out: list[str] = []
    for line in text.splitlines():
        prose = line.strip() and not _lead(line) and not _ITEM.match(line)
        if prose and out and out[-1] and not _lead(out[-1]):
            out[-1] += " " + line.strip()
        elif line.strip() and out and out[-1] and _ITEM.match(out[-1]) and not _ITEM.match(line) and _lead(line) == "  ":
            out[-1] += " " + line.strip()  # a list item's continuation line
        else:
            out.append(line.rstrip())
    return out


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions reflowed to the terminal by paragraph (example lines and list items kept as
    lines), and ``(default: X)`` after every option help that does not already state its default
    (flags and unset options have none)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for para in _paragraphs(text):
            lines += textwrap.wrap(para.strip(), width, initial_indent=indent + _lead(para),
                                   subsequent_indent=indent + _lead(para) + ("  " if _ITEM.match(para) else ""))
            lines += [] if para else [""]
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
