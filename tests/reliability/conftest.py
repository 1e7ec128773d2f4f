"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.faultproxy import FaultProxy, fault_proxy


@pytest.fixture()
def proxy(s3_server: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the session's moto server (no faults planned yet)."""
    with fault_proxy(s3_server) as p:
        yield p
