"""A pytest plugin: a skipped test fails the run unless its reason is allow-listed here.

Under pytest 8 a broken install (a required package missing, npm absent on CI) used to show up only
as skips in a green run. Now every skip must have a reason below; the summary prints the list and
any skip outside it, and the run exits non-zero.
"""

from __future__ import annotations

ALLOWED_SKIPS = {
    "npm not installed (MDISTILL_LOCAL=1)":
        "local mode only (MDISTILL_LOCAL=1 set by hand): CI has npm, and there the npm fetch test must run",
}


def _reason(report) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


def _unexpected(session):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    return [r for r in skipped if _reason(r) not in ALLOWED_SKIPS]


def pytest_sessionfinish(session, exitstatus):
    if _unexpected(session) and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    unexpected = _unexpected(terminalreporter._session)
    terminalreporter.write_line("allowed skip reasons: " + "; ".join(f"{k!r} ({v})" for k, v in ALLOWED_SKIPS.items()))
    for report in unexpected:
        terminalreporter.write_line(f"SKIP NOT ALLOWED: {report.nodeid}: {_reason(report)}", red=True)
    if unexpected:
        terminalreporter.write_line(f"{len(unexpected)} test(s) skipped without an allow-listed reason: "
                                    "the run fails (tests/skip_guard.py)", red=True)
