"""Fixtures the integration tests share with the unit tests they were split from: one
definition each, found by pytest here for every test in this folder."""

from tests.unit.test_cost import price_file  # noqa: F401
from tests.unit.test_launch import tasks  # noqa: F401
from tests.unit.test_studio_api import client  # noqa: F401
from tests.integration.two_process import one_process_run  # noqa: F401
