"""Test-run wiring: Hypothesis profiles, backend selection, and the rule that a present runtime is never skipped.

Profiles: `ci` (default, fast), `dev` (more examples), `nightly` (deep); choose with `--hypothesis-profile NAME` or
HYPOTHESIS_PROFILE. Every profile keeps failing examples in .hypothesis/ so the next run replays them first;
`make test` fixes the seed (--hypothesis-seed=0) so CI is reproducible.

KBO_REQUIRE=opencl,vulkan (set by .ci/run) turns "runtime missing" from a skip into a failure for those backends,
so a broken driver install cannot pass CI as a wall of skips.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("ci", max_examples=6, **_common)
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


# ---- conformance counts into the result history (python -m pytest --record-history) --------------------------------
def pytest_addoption(parser):
    parser.addoption("--record-history", action="store_true",
                     help="append pass/fail/skip counts per backend and op to reports/history.jsonl")


_counts: dict = {}


def pytest_runtest_logreport(report):
    """Counts conformance outcomes by (backend, op) from ids like test_upstream[vulkan-ACC(...)]."""
    if "test_ops.py::" not in report.nodeid or "[" not in report.nodeid:
        return
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    param = report.nodeid.split("[", 1)[1]
    backend, rest = param.split("-", 1)
    op = rest.split("(", 1)[0].rstrip("]")
    entry = _counts.setdefault((backend, op), {"passed": 0, "failed": 0, "skipped": 0})
    entry[report.outcome] += 1


def pytest_sessionfinish(session, exitstatus):
    if not session.config.getoption("--record-history") or hasattr(session.config, "workerinput"):
        return
    from reports import history

    profile = session.config.getoption("hypothesis_profile", None) or os.environ.get("HYPOTHESIS_PROFILE", "ci")
    history.append([{"kind": "conformance", "backend": b, "op": op, "profile": profile, **c}
                    for (b, op), c in sorted(_counts.items())])
