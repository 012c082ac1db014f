"""pytest plugin of the GPU check: every failure's full report, written the moment it happens.

The first run on a GPU machine lost the details of three failed tests: pytest prints tracebacks and
writes its JUnit XML only at the end of the session, and the session was stopped at its time budget
while a later test compiled. With this plugin (``gpu_check.py`` loads it with
``-p gpu_check_plugin --failures-file PATH``), each failed test phase (setup, call or teardown) is
appended to PATH and printed to pytest's own output as soon as its report exists, with

- a header line ``@@FAILURE {json}``: the test, the phase, its seconds and the one-line message;
- the full report (``longreprtext``: the traceback and the assertion's text);
- everything the test printed or logged (the captured stdout, stderr and log sections).

The file is flushed and synced after each failure, so a later ``SIGKILL`` loses none of it. When the
session is interrupted (the driver sends SIGINT at the budget), the test that was running and where
it was are written as ``@@INTERRUPTED {json}`` plus the traceback. After every test, one line
``[gpu_check] <test>: <outcome> in <s> s`` (setup + call + teardown) goes to the output, so the next
budget can be set from measured times.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

FAILURE_PREFIX = "@@FAILURE "
INTERRUPTED_PREFIX = "@@INTERRUPTED "
INTERRUPT_FRAMES = 40  # innermost frames of the traceback where an interrupted test was


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--failures-file",
        default=os.environ.get("NAPARI_SAM2_FAILURES_FILE"),
        help="append every failed test's full report to this file the moment it fails (gpu_check.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("failures_file")
    if path:
        config.pluginmanager.register(FailureRecorder(Path(path), config), "gpu_check_failures")


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    lines = [ln for ln in (report.longreprtext or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "?"


class FailureRecorder:
    def __init__(self, path: Path, config: pytest.Config) -> None:
        self.path = path
        self.config = config
        self.current: str | None = None
        self.started = 0.0
        self.seconds: dict[str, float] = {}
        self.outcomes: dict[str, str] = {}
        self.paths: dict[str, str] = {}  # node id -> file, for files outside the rootdir
        path.parent.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ writing

    def _append(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def _terminal(self, text: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.ensure_newline()
            for line in text.rstrip("\n").splitlines():
                tr.write_line(line)
        else:  # no terminal reporter (-p no:terminal): still in the output
            print(text, flush=True)

    # ------------------------------------------------------------------ hooks

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        if item.nodeid.startswith("::"):
            self.paths[item.nodeid] = str(item.path)

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        self.current = nodeid
        self.started = time.monotonic()

    @pytest.hookimpl(trylast=True)  # after the terminal reporter has printed the outcome
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nid = report.nodeid
        self.seconds[nid] = self.seconds.get(nid, 0.0) + (report.duration or 0.0)
        if report.failed:
            outcome = "failed" if report.when == "call" else "error"
            self.outcomes[nid] = outcome
            head = {
                # a file outside the rootdir has no path in its node id: name it by its own path
                "test": f"{self.paths.get(nid, '')}{nid}" if nid.startswith("::") else nid,
                "when": report.when,
                "outcome": outcome,
                "seconds": round(report.duration or 0.0, 2),
                "message": _message(report)[:2000],
            }
            parts = [
                FAILURE_PREFIX + json.dumps(head),
                f"===== {outcome.upper()}: {head['test']} ({report.when}, {head['seconds']} s) =====",
                report.longreprtext or "(no report text)",
            ]
            for name, content in report.sections:
                parts.append(f"----- {name} -----")
                parts.append(content.rstrip("\n"))
            text = "\n".join(parts) + "\n\n"
            self._append(text)
            self._terminal(text)
        elif report.skipped and nid not in self.outcomes:
            self.outcomes[nid] = "skipped"
        elif report.when == "call" and nid not in self.outcomes:
            self.outcomes[nid] = "passed"
        if report.when == "teardown":
            self._terminal(
                f"[gpu_check] {nid}: {self.outcomes.pop(nid, 'passed')} in {self.seconds.pop(nid, 0.0):.1f} s"
            )
            self.current = None

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # a test file that does not even import: no test report will follow
            head = {"test": report.nodeid, "when": "collect", "outcome": "error", "message": _message(report)}
            text = f"{FAILURE_PREFIX}{json.dumps(head)}\n===== ERROR collecting {report.nodeid} =====\n"
            self._append(text + (report.longreprtext or "") + "\n\n")
            self._terminal(text)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        try:  # where it was: the innermost frames outside pytest's and pluggy's own
            entries = [
                e
                for e in excinfo.traceback
                if not any(part in str(e.path) for part in ("/_pytest/", "/pluggy/"))
            ]
            lines = [f"{e.path}:{e.lineno + 1} in {e.name}: {str(e.statement).strip()}" for e in entries]
        except Exception as e:  # noqa: BLE001 - the record must be written whatever the repr does
            lines = [f"(no traceback: {type(e).__name__}: {e})"]
        head = {
            "test": self.current,
            "seconds_in_test": round(time.monotonic() - self.started, 1) if self.current else None,
            "message": str(excinfo.value) or excinfo.typename,
            "where": lines[-1] if lines else None,
        }
        where = "\n".join((["..."] if len(lines) > INTERRUPT_FRAMES else []) + lines[-INTERRUPT_FRAMES:])
        text = (
            INTERRUPTED_PREFIX
            + json.dumps(head)
            + f"\n===== INTERRUPTED while running {self.current or '(between tests)'} =====\n{where}\n\n"
        )
        self._append(text)
        self._terminal(text)
