"""The suite passes on a busy machine: every property test runs without a deadline and without
the health check that measures time (a CPU-heavy neighbour makes input generation slow, which
says nothing about the code). Method: import every test module and read the settings hypothesis
attached to each test."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from hypothesis import HealthCheck

TESTS = Path(__file__).parent


def _property_tests():
    for path in sorted(TESTS.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        for name, value in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(value) and \
                    hasattr(value, "hypothesis"):
                yield f"{path.stem}.{name}", value._hypothesis_internal_use_settings


def test_every_property_test_is_safe_under_load():
    found = list(_property_tests())
    assert len(found) > 30  # the suite's property tests were all seen
    unsafe = [name for name, chosen in found
              if chosen.deadline is not None
              or HealthCheck.too_slow not in chosen.suppress_health_check]
    assert unsafe == []
