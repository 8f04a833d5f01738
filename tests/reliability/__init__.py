"""The reliability suite: fault injection and fuzzing (`long` marks the full runs).

Fuzz budgets: each fuzz test runs as `[short]` (few examples, derandomized:
the same inputs every run, part of `scripts/test`) and `[long]` (many random
examples, marked `long`: `scripts/test --long`, `scripts/reliability`).
"""

from hypothesis import HealthCheck, settings
from pytest import mark, param

FUZZ_BUDGETS = [param("short", id="short"), param("long", id="long", marks=mark.long)]


def fuzz_settings(budget: str, short: int, long: int) -> settings:
    """Hypothesis settings for one budget: `short` or `long` examples, no deadline."""
    return settings(max_examples=short if budget == "short" else long, deadline=None,
                    derandomize=budget == "short", database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
