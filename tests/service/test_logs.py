"""The service's logging helpers: `Sparse`, and the open-files check at start-up."""

from __future__ import annotations

import logging
import sys

import pytest

from ffserve.config import Config
from ffserve.service.cli import open_files_needed, raise_open_files_limit
from ffserve.service.logs import Sparse


def accept_failed() -> logging.LogRecord:
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "trio.serve_listeners", logging.ERROR, __file__, 1, "accept returned %s", ("EMFILE",),
        exc_info,
    )  # fmt: skip


def test_sparse_lets_one_record_through_per_interval_without_its_traceback() -> None:
    now = [0.0]
    sparse = Sparse(every_s=10.0, clock=lambda: now[0])
    passed = []
    for tenth in range(100):  # 10 s of retries every 0.1 s
        now[0] = tenth / 10
        record = accept_failed()
        if sparse.filter(record):
            passed.append(record)
    now[0] = 10.0
    record = accept_failed()
    assert sparse.filter(record)
    assert [r.exc_info for r in passed] == [None]
    assert record.exc_info is None
    assert record.getMessage() == "accept returned EMFILE (and 99 more like it)"


def test_a_limit_below_what_the_config_needs_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Config().replace("server", max_connections=1_000_000)
    assert open_files_needed(config) > 1_000_000
    raise_open_files_limit(config)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("open files: the limit is ") and "max_connections" in line
    caplog.clear()
    raise_open_files_limit(Config().replace("server", max_connections=10))
    assert not caplog.records
