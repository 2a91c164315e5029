"""Test-run wiring: Hypothesis profiles, backend selection, and the rule that a present runtime is never skipped.

Profiles: `ci` (default, fast), `dev` (more examples), `nightly` (deep); choose with `--hypothesis-profile NAME` or
HYPOTHESIS_PROFILE. Every profile keeps failing examples in .hypothesis/ so the next run replays them first;
`make test` fixes the seed (--hypothesis-seed=0) so CI is reproducible.

KBO_REQUIRE=opencl,vulkan (set by .ci/run) turns "runtime missing" from a skip into a failure for those backends,
so a broken driver install cannot pass CI as a wall of skips.

test-backend-ops' habits (pytest --help, group "kimi-backend-ops"): --op ACC,SET selects the tests of those ops by
name (-o), --params REGEX the pinned cases whose parameters match (-p), --list-ops and --show-coverage print the ops
and the support and kernel-path tables, then exit. Selection reads each test's parameters (a Case, an OpSpec or a
parameter named `op`), not its id, so `--op SET` never picks ACC through "offset" as `-k set` does.
"""
import os
import re

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


def pytest_addoption(parser):
    group = parser.getgroup("kimi-backend-ops")
    group.addoption("--record-history", action="store_true",
                    help="append pass/fail/skip counts per backend and op to the history ($KBO_HISTORY, else "
                         "~/.local/share/kimi-backend-ops/history.jsonl)")
    group.addoption("--op", metavar="OPS",
                    help="run only the tests of these ops (comma-separated exact names, any case, e.g. ACC,SET; like "
                         "test-backend-ops -o): tests parametrised by a case or an op name; the others are deselected")
    group.addoption("--params", metavar="REGEX",
                    help="run only the pinned cases whose parameter string (type=f32,ne_a=[...],..., the part of the "
                         "id in parentheses) matches REGEX (re.search; like test-backend-ops -p); tests without a "
                         "pinned case (drawn, model, CLI tests) are deselected")
    group.addoption("--list-ops", action="store_true",
                    help="print every registered op (family, pinned cases, backends that run it, summary) and exit")
    group.addoption("--show-coverage", action="store_true",
                    help="print the op x source types x backend support table and the kernel paths each backend's "
                         "pinned cases reach, then exit (no GPU needed: a missing runtime shows as n/a)")


# ---- test-backend-ops' -o, -p and list/support modes -----------------------------------------------------------------
def pytest_cmdline_main(config):
    """--list-ops and --show-coverage print and exit before any collection (and before xdist starts workers)."""
    if config.option.help or config.option.version:
        return None  # --help and --version win, as they do over every other option
    if config.getoption("--list-ops") or config.getoption("--show-coverage"):
        from cases import coverage

        print(coverage.list_ops_report() if config.getoption("--list-ops") else coverage.show_coverage_report())
        return 0
    return None


_selection_key = pytest.StashKey[tuple]()


def pytest_configure(config):
    """Checks --op and --params once per process (controller and every xdist worker alike): a bad one is a usage
    error before anything is collected."""
    ops = None
    if config.getoption("--op") is not None:
        from reference.ops import get_op

        names = [n.strip() for n in config.getoption("--op").split(",") if n.strip()]
        if not names:
            raise pytest.UsageError("--op needs at least one op name, e.g. --op ACC,SET")
        try:
            ops = {get_op(n).name for n in names}
        except ValueError as err:
            raise pytest.UsageError(f"--op: {err}") from None
    pattern = None
    if config.getoption("--params") is not None:
        try:
            pattern = re.compile(config.getoption("--params"))
        except re.error as err:
            raise pytest.UsageError(f"--params: bad regular expression {config.getoption('--params')!r}: {err}") \
                from None
    config.stash[_selection_key] = (ops, pattern)


def item_case_and_op(item):
    """(the pinned Case the test runs or None, the op name it tests or None), read from its parameters."""
    from reference.case import Case
    from reference.ops import OpSpec

    case = op = None
    for name, value in getattr(getattr(item, "callspec", None), "params", {}).items():
        if isinstance(value, Case):
            case, op = value, value.op
        elif isinstance(value, OpSpec):
            op = value.name
        elif name == "op" and isinstance(value, str):
            op = value.upper()
    return case, op


def case_vars(case) -> str:
    """The parameter part of the case's label: OP(vars) -> vars, what test-backend-ops -p matches."""
    return case.label()[len(case.op) + 1:-1]


def pytest_collection_modifyitems(config, items):
    ops, pattern = config.stash[_selection_key]
    if ops is None and pattern is None:
        return
    selected, deselected = [], []
    for item in items:
        case, op = item_case_and_op(item)
        keep = ((ops is None or op in ops)
                and (pattern is None or (case is not None and pattern.search(case_vars(case)) is not None)))
        (selected if keep else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


# ---- conformance counts into the result history (python -m pytest --record-history) --------------------------------
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
    from backends import availability
    from reports import history

    profile = session.config.getoption("hypothesis_profile", None) or os.environ.get("HYPOTHESIS_PROFILE", "ci")
    # A backend whose runtime this machine lacks (CUDA without a GPU) measured nothing here: no record, rather than
    # a config where "no tests ran", which the comparison rightly fails for a backend that is present.
    absent = {b for b, _ in _counts if availability(b) is not None}
    history.append([{"kind": "conformance", "backend": b, "op": op, "profile": profile, **c}
                    for (b, op), c in sorted(_counts.items()) if b not in absent])
