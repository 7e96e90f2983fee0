"""Option types shared by several subcommands."""

from __future__ import annotations

DEVICE_HELP = "torch device: auto (cuda if available, else cpu), cpu, cuda or cuda:N"


def device(value: str) -> str:
    """``--device`` as an argparse ``type=``: one rule for every command, ``auto`` -> ``cuda`` if
    available, else ``cpu``; other names pass through (the command checks them, one-line error)."""
    if value != "auto":
        return value
    # torch: imported only when a command that runs a model parses its arguments, not for `a3d --help`
    from a3d.predict.loading import resolve_device_name

    return resolve_device_name(value)


def resolve_device(value: str) -> str:
    """:func:`device`, then checked: an A3DError unless this machine has that device."""
    from a3d.predict.loading import check_device  # torch, as above

    name = device(value)
    check_device(name)
    return name
