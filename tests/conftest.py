"""Fixtures shared by the unit and integration suites."""

pytest_plugins = ["tests.fakes", "tests.spans"]
