"""Option types shared by several subcommands."""

from __future__ import annotations

import argparse

from a3d.errors import A3DError

DEVICE_HELP = "torch device: auto (cuda if available, else cpu), cpu, cuda or cuda:N"


def resolve_device(value: str) -> str:
    """``--device``, one rule for every command: ``auto`` -> ``cuda`` if available, else ``cpu``; an
    explicit device must exist on this machine (A3DError otherwise)."""
    # torch and the detector: imported only by commands that run a model, when they do
    from a3d.predict.loading import check_device, resolve_device_name

    name = resolve_device_name(value)
    check_device(name)
    return name


def device(value: str) -> str:
    """:func:`resolve_device` as an argparse ``type=`` (a bad device: usage error, exit 2)."""
    try:
        return resolve_device(value)
    except A3DError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
