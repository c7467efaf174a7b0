"""The audit log: one line per event with client, subject and reason; rate-limited."""

from __future__ import annotations

import logging

import pytest

from ffserve.audit import AuditLog


def test_lines_name_client_subject_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog(clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, logger="ffserve.audit"):
        assert audit.record("handshake_refused", client="10.0.0.1", subject="app", reason="bad")
    (line,) = caplog.messages
    assert "handshake_refused" in line and "10.0.0.1" in line and "'app'" in line
    assert "'bad'" in line


def test_a_flood_is_counted_not_written(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    audit = AuditLog(per_second=10, burst=5, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="ffserve.audit"):
        logged = [
            audit.record("x", client="c", subject=None, reason="r\nfake line") for _ in range(50)
        ]
        assert logged.count(True) == 5 and audit.suppressed == 45
        now[0] = 1.0  # ten tokens back
        assert audit.record("x", client="c", subject=None, reason="r")
    assert any("45 lines suppressed" in m for m in caplog.messages)
    assert all("\n" not in m for m in caplog.messages)  # a reason cannot forge a line
    assert len(caplog.messages) == 5 + 2
