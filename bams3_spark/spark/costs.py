"""Cost accounting of cohort jobs: what the executors read, summed on the driver.

Each task reads its datasets through a
:class:`~bams3_spark.io.storage.CountingStorage` and adds its figures to a
Spark accumulator (a few integers per task: nothing per read reaches the
driver). The summary line gives the figures ``bams3 query --explain`` gives
for one query -- chunk objects, requests, bytes -- for the whole job, and the
design documents' request cost estimate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

#: The package's logger: ``jobs/*.py`` show its INFO lines (the plan) on stderr.
logger = logging.getLogger("bams3_spark")

#: Price of GET requests the estimate uses (S3 standard, per 1,000 requests).
GET_PRICE_PER_1000 = 0.0004

#: Fields of the accumulator vector, in order.
FIELDS = ("units", "chunks", "requests", "bytes")


@dataclass
class JobCosts:
    """What a job read, and how it was split.

    Attributes:
        samples: Samples of the job.
        tasks: Spark tasks that ran the units (plus reduce tasks, if any).
        units: Units of work done (samples, references or runs of chunks).
        chunks: Chunk objects read.
        requests: Read requests (GET) made, metadata included.
        bytes: Bytes fetched.
        planning_seconds: Driver time to plan (manifests, units).
    """

    samples: int = 0
    tasks: int = 0
    units: int = 0
    chunks: int = 0
    requests: int = 0
    bytes: int = 0
    planning_seconds: float = 0.0

    @property
    def request_cost(self) -> float:
        """Estimated request cost in dollars (requests x $0.0004 per 1,000)."""
        return request_cost(self.requests)

    def plan_line(self, units: int, chunks: int, nbytes: int) -> str:
        """The job's one-line plan, logged before its tasks start.

        Args:
            units: Units of work planned.
            chunks: Chunk objects of the cohort's samples (what a whole-dataset job reads).
            nbytes: Their bytes.
        """
        return (
            f"plan: {self.samples:,} sample(s) ({chunks:,} chunk object(s), {nbytes / 1e6:,.1f} MB), "
            f"{units:,} unit(s) in {self.tasks:,} task(s); planned in {self.planning_seconds:.2f} s"
        )

    def line(self) -> str:
        """The job's one-line cost summary."""
        return (
            f"{self.samples:,} sample(s), {self.tasks:,} task(s), {self.units:,} unit(s); read "
            f"{self.chunks:,} chunk object(s) with {self.requests:,} GET request(s), "
            f"{self.bytes / 1e6:,.1f} MB fetched; request cost ~${self.request_cost:.4f} "
            f"(${GET_PRICE_PER_1000} per 1,000 GETs); planned in {self.planning_seconds:.2f} s"
        )


def log_plan(costs: JobCosts, cohort: Any, units: int) -> None:
    """Log ``costs.plan_line`` for a cohort on the package's logger (jobs show it on stderr)."""
    logger.info(costs.plan_line(units, sum(s.chunks for s in cohort.samples),
                                sum(s.bytes for s in cohort.samples)))


def request_cost(requests: int) -> float:
    """Dollars for ``requests`` GET requests at :data:`GET_PRICE_PER_1000`."""
    return requests * GET_PRICE_PER_1000 / 1000


class _VectorParam:
    """Element-wise sums of :data:`FIELDS` (Spark needs only ``zero`` and ``addInPlace``)."""

    def zero(self, value: Any) -> list[int]:
        return [0] * len(FIELDS)

    def addInPlace(self, a: list[int], b: list[int]) -> list[int]:  # noqa: N802 - Spark's name
        return [x + y for x, y in zip(a, b, strict=True)]


def accumulator(spark: Any) -> Any:
    """A Spark accumulator of :data:`FIELDS`; tasks ``add`` a list of as many integers."""
    return spark.sparkContext.accumulator([0] * len(FIELDS), _VectorParam())


def add_costs(costs: JobCosts, value: list[int]) -> JobCosts:
    """Fill ``costs`` from an accumulator's value."""
    costs.units, costs.chunks, costs.requests, costs.bytes = (int(v) for v in value)
    return costs


__all__ = ["FIELDS", "GET_PRICE_PER_1000", "JobCosts", "accumulator", "add_costs", "log_plan", "request_cost"]
