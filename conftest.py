"""Test-run wiring: Hypothesis profiles, backend selection, and the rule that a present runtime is never skipped.

Profiles: `ci` (default: fast and derandomized, so CI is reproducible), `dev` (more examples, random, remembers
failures in .hypothesis/), `nightly` (deep). Choose with `--hypothesis-profile NAME` or HYPOTHESIS_PROFILE.

KBO_REQUIRE=opencl,vulkan (set by .ci/run) turns "runtime missing" from a skip into a failure for those backends,
so a broken driver install cannot pass CI as a wall of skips.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("ci", max_examples=6, derandomize=True, **_common)
settings.register_profile("dev", max_examples=40, **_common)
settings.register_profile("nightly", max_examples=400, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def required_backends() -> set[str]:
    return {b.strip() for b in os.environ.get("KBO_REQUIRE", "").split(",") if b.strip()}


def device_backend(name: str):
    """The backend instance, or a skip (a failure when KBO_REQUIRE names it) saying why it cannot run here."""
    from backends import availability, get_backend

    reason = availability(name)
    if reason:
        if name in required_backends():
            pytest.fail(f"{name} is required (KBO_REQUIRE) but {reason}")
        pytest.skip(reason)
    return get_backend(name)
