"""The summary of repeated wall-clock timings that the speed benchmarks report."""

from __future__ import annotations

import statistics


def spread(times: list[float], amount: int, unit: str) -> dict[str, float | int]:
    """Median, min and max seconds of ``times``, with ``amount`` of ``unit`` done per call and the
    rate at the median.

    Example:
        >>> spread([2.0, 1.0, 4.0], 10, "tokens")
        {'seconds': 2.0, 'seconds_min': 1.0, 'seconds_max': 4.0, 'tokens': 10, 'tokens_per_s': 5.0}
    """
    median = statistics.median(times)
    return {"seconds": median, "seconds_min": min(times), "seconds_max": max(times), unit: amount,
            f"{unit}_per_s": amount / median}  # fmt: skip
