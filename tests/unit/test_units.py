"""Memory amounts as users write them, and as peftstudio prints them."""

import pytest

from peftstudio.errors import UserError
from peftstudio.units import GIB, MIB, format_gib, parse_bytes


@pytest.mark.parametrize("text, expected", [("2GiB", 2 * GIB), ("1.5GB", 1_500_000_000), ("500 MiB", 500 * MIB),
                                            ("4096", 4096), ("3kb", 3000), (" 1gib ", GIB)])
def test_parse_bytes_reads_decimal_and_binary_units(text, expected):
    assert parse_bytes(text, "--memory-budget") == expected


@pytest.mark.parametrize("size", [1, 4096, 3 * MIB, 24 * GIB, 80 * GIB + 123])
def test_parse_bytes_round_trips_a_number_of_bytes(size):
    assert parse_bytes(str(size), "--device-memory") == size


@pytest.mark.parametrize("size", [GIB // 4, 24 * GIB, 80 * GIB + 123])
def test_parse_bytes_reads_what_format_gib_prints(size):
    assert parse_bytes(format_gib(size, 3), "--device-memory") == pytest.approx(size, abs=GIB / 2000)


@pytest.mark.parametrize("text", ["lots", "", "2 GiBs", "-1GiB", "0", "1e9", "GiB"])
def test_parse_bytes_names_the_key_of_bad_input(text):
    with pytest.raises(UserError) as raised:
        parse_bytes(text, "--device-memory")
    problem, = raised.value.problems
    assert problem.where == "--device-memory" and "not an amount of memory" in problem.message and problem.fix


def test_format_gib():
    assert format_gib(24 * GIB) == "24.0 GiB"
    assert format_gib(1.5 * GIB, 2) == "1.50 GiB"
    assert format_gib(80 * GIB, 0) == "80 GiB"
