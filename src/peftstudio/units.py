"""Amounts of memory: the binary units, reading one the user wrote, and showing one."""

from __future__ import annotations

import re

from peftstudio.errors import Problem, UserError

KIB = 1024
MIB = 1024**2
GIB = 1024**3

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": KIB, "mib": MIB, "gib": GIB}
_AMOUNT = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_bytes(text: str, where: str) -> int:
    """`2GiB`, `1.5GB`, `500MiB` or a plain number of bytes; anything else is a user error at `where`."""
    match = _AMOUNT.fullmatch(str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise UserError(Problem(where, f"{text!r} is not an amount of memory", "write e.g. 2GiB, 1500MB or 2147483648"))
    return int(float(match.group(1)) * _UNITS[unit])


def format_gib(size_bytes: float, digits: int = 1) -> str:
    """`size_bytes` in GiB with `digits` decimals, e.g. `12.3 GiB`."""
    return f"{size_bytes / GIB:.{digits}f} GiB"
