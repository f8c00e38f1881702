"""Benchmarks of the native hashing core beside plain-Python hashlib and this machine's limit.

Run ``python -m pytest bench/bench_hashing.py --benchmark-only``. Each group times the native
path (1 and 2 threads where it has threads) and a hashlib baseline on the same workload; the
closing summary gives each rate as a share of the limit openssl measures, and the targets of
the issue. Each run's answer is checked too, so a fast wrong answer cannot pass for a result.
"""

from __future__ import annotations

import pytest

import hashing_table as table

GROUPS = {"nonce": table.nonce_cases, "headers": table.header_cases,
          "merkle": table.merkle_cases, "records": table.record_cases}


def case_named(workloads: table.Workloads, group: str, name: str) -> table.Case:
    (case,) = [case for case in GROUPS[group](workloads) if case.name == name]
    return case


def names(group: str) -> list[str]:
    # Case names do not depend on the data, so a small workload lists them.
    return [case.name for case in GROUPS[group](table.Workloads(scale=0))]


@pytest.mark.parametrize("name", names("nonce"))
def test_nonce_search(run_case, workloads, name):
    run_case(case_named(workloads, "nonce", name))


@pytest.mark.parametrize("name", names("headers"))
def test_validate_headers(run_case, workloads, name):
    run_case(case_named(workloads, "headers", name))


@pytest.mark.parametrize("name", names("merkle"))
def test_merkle_root(run_case, workloads, name):
    run_case(case_named(workloads, "merkle", name))


@pytest.mark.parametrize("name", names("records"))
def test_sha256d_records(run_case, workloads, name):
    run_case(case_named(workloads, "records", name))
