"""Shared fixtures: the outside test data and the two SHA-256 backends of the native core."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tsunagi import hashing

PORTABLE_ENV = "TSUNAGI_SHA256_PORTABLE"

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


def _force_backend(name: str) -> str:
    """Selects a backend by name through the environment variable; returns what is in use."""
    if name == "portable":
        os.environ[PORTABLE_ENV] = "1"
    else:
        os.environ.pop(PORTABLE_ENV, None)
    return hashing.select_backend()


@pytest.fixture
def use_backend():
    """A function that switches the backend; the caller's backend and env come back after."""
    saved = os.environ.get(PORTABLE_ENV)
    yield _force_backend
    if saved is None:
        os.environ.pop(PORTABLE_ENV, None)
    else:
        os.environ[PORTABLE_ENV] = saved
    hashing.select_backend()


@pytest.fixture(params=["shani", "portable"])
def backend(request, use_backend) -> str:
    """Runs the test once on each backend; SHA-NI is skipped on a CPU that lacks it."""
    chosen = use_backend(request.param)
    if chosen != request.param:
        pytest.skip(f"this CPU has no {request.param} path (got {chosen})")
    return chosen
