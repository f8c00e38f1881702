"""Shared fixtures: the outside test data and the configurations of the native SHA-256 core."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tsunagi import hashing

# Property tests run on shared, busy machines: no deadline, and no health check that measures
# time (too_slow fails when another process takes the CPU, not when the test is wrong). Every
# explicit @settings in the suite keeps these (tests/test_suite_settings.py checks it).
LOAD_SAFE_HEALTH_CHECKS = [HealthCheck.too_slow]
settings.register_profile("tsunagi", deadline=None,
                          suppress_health_check=LOAD_SAFE_HEALTH_CHECKS)
settings.load_profile("tsunagi")

PORTABLE_ENV = "TSUNAGI_SHA256_PORTABLE"
LANES_ENV = "TSUNAGI_SHA256_LANES"

# Configurations of the native core, by test id: (backend, lane cap). Between them they run
# every batch kernel ext/sha256.c has on a CPU with SHA-NI and AVX-512: the SHA-NI backend with
# its measured choice and with SHA-NI lanes pinned (cap 0), the portable backend on its widest
# vector lanes (16), on 8 and on 4. A CPU without a kernel falls back to a narrower one.
CONFIGS = {
    "shani": ("shani", None),
    "shani-lanes0": ("shani", "0"),
    "portable": ("portable", None),
    "portable-lanes8": ("portable", "8"),
    "portable-lanes4": ("portable", "4"),
}

# CI clones the repository with shared/ beside it, so the data sits next to the repo folder.
TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The shared/testdata folder; a clear failure (not a skip) when it is missing."""
    if not (TESTDATA / "bitcoin").is_dir():
        pytest.fail(f"test data not found at {TESTDATA}: clone the repo with shared/ beside it")
    return TESTDATA


@pytest.fixture(scope="session")
def bitcoin_dir(testdata: Path) -> Path:
    return testdata / "bitcoin"


def _force_backend(config: str) -> str:
    """Selects a configuration of CONFIGS through the environment; returns the backend in use."""
    name, lanes = CONFIGS[config]
    if name == "portable":
        os.environ[PORTABLE_ENV] = "1"
    else:
        os.environ.pop(PORTABLE_ENV, None)
    if lanes is None:
        os.environ.pop(LANES_ENV, None)
    else:
        os.environ[LANES_ENV] = lanes
    return hashing.select_backend()


@pytest.fixture
def use_backend():
    """A function that switches the configuration; the caller's env and backend come back."""
    saved = {name: os.environ.get(name) for name in (PORTABLE_ENV, LANES_ENV)}
    yield _force_backend
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    hashing.select_backend()


@pytest.fixture(params=list(CONFIGS))
def backend(request, use_backend) -> str:
    """Runs the test on each configuration; SHA-NI ones are skipped on a CPU without it."""
    chosen = use_backend(request.param)
    wanted = CONFIGS[request.param][0]
    if chosen != wanted:
        pytest.skip(f"this CPU has no {wanted} path (got {chosen})")
    return request.param
