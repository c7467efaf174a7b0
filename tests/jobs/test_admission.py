"""Admission: what a job takes comes back together, and a refusal takes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ffserve.config import Config, QuotasConfig
from ffserve.errors import AdmissionError, ErrorCode
from ffserve.jobs.admission import Admission, ConnectionShare
from ffserve.jobs.pool import WorkerPool
from ffserve.jobs.quota import Quota
from tests.conftest import test_config

MIB = 1024 * 1024


def admission_for(tmp_path: Path, **sections: dict[str, object]) -> Admission:
    config: Config = test_config(tmp_path, **sections)
    pool = WorkerPool(config.jobs.max_concurrent, config.jobs.queue_limit)
    return Admission(config, pool, tmp_path)


def share_of(limit: int, client: str = "client", **quota: object) -> ConnectionShare:
    return ConnectionShare(limit, client, Quota.of(QuotasConfig(), {"quota": quota}))


def held(admission: Admission, share: ConnectionShare) -> tuple[int, int, int]:
    return admission.pool.admitted, share.admitted, admission.reserved_bytes


def test_a_ticket_gives_back_everything_once(tmp_path: Path) -> None:
    admission = admission_for(tmp_path)
    share = share_of(4)
    with admission.admit(share, "thumbnail", [3 * MIB, 1 * MIB]) as ticket:
        assert held(admission, share) == (1, 1, 4 * MIB)
        ticket.stored(MIB)  # a chunk on disk shows in free space: no longer reserved
        assert held(admission, share) == (1, 1, 3 * MIB)
    assert held(admission, share) == (0, 0, 0)
    ticket.close()  # closing again gives nothing back twice
    assert held(admission, share) == (0, 0, 0)


def test_a_ticket_is_given_back_when_the_job_raises(tmp_path: Path) -> None:
    admission = admission_for(tmp_path)
    share = share_of(4)
    with pytest.raises(RuntimeError), admission.admit(share, "thumbnail", [MIB]):
        raise RuntimeError("the job failed")
    assert held(admission, share) == (0, 0, 0)


def refusal(admission: Admission, share: ConnectionShare, sizes: list[int]) -> str:
    before = held(admission, share)
    with pytest.raises(AdmissionError) as refused:
        admission.admit(share, "thumbnail", sizes)
    assert held(admission, share) == before  # a refusal takes nothing
    return refused.value.code


def test_refusals_in_order_and_taking_nothing(tmp_path: Path) -> None:
    admission = admission_for(tmp_path, limits={"max_upload_mb": 2}, jobs={"queue_limit": 0})
    share = share_of(1)
    assert refusal(admission, share, [3 * MIB]) == ErrorCode.TOO_LARGE
    free = shutil.disk_usage(tmp_path).free
    assert refusal(admission, share, [MIB] * (free // MIB + 1)) == ErrorCode.TOO_LARGE
    admission.draining = True
    assert refusal(admission, share, []) == ErrorCode.SHUTTING_DOWN
    admission.draining = False
    first = admission.admit(share, "thumbnail")
    assert refusal(admission, share, []) == ErrorCode.BUSY  # the connection's limit
    other = share_of(5, client="other")
    second = admission.admit(other, "thumbnail")  # max_concurrent = 2, queue_limit = 0
    first.input_done()
    second.input_done()
    assert refusal(admission, share_of(5, client="third"), []) == ErrorCode.BUSY  # the pool's
    first.close()
    second.close()
    assert admission.pool.admitted == admission.pool.receiving == 0


def test_jobs_waiting_for_input_fill_their_clients_quota_not_the_queue(tmp_path: Path) -> None:
    """Found: 260 start_jobs with no upload made the server BUSY for everybody for the
    input timeout. Waiting jobs now count against their own client's queued_jobs."""
    admission = admission_for(tmp_path, jobs={"queue_limit": 0})  # 2 places in all
    greedy = share_of(100, client="greedy", queued_jobs=3)
    waiting = [admission.admit(greedy, "thumbnail") for _ in range(3)]
    refused = refusal(admission, share_of(100, client="greedy", queued_jobs=3), [])
    assert refused == ErrorCode.QUOTA_EXCEEDED
    with admission.admit(share_of(1, client="victim"), "thumbnail") as ticket:
        ticket.input_done()  # the victim's job takes its place in the queue
        assert admission.pool.queued == 4 and not admission.pool.full
    for ticket in waiting:
        ticket.close()
    assert admission.pool.admitted == admission.pool.receiving == 0


def test_a_job_whose_input_arrives_when_the_queue_is_full_gets_busy(tmp_path: Path) -> None:
    admission = admission_for(tmp_path, jobs={"queue_limit": 0, "max_concurrent": 1})
    early, late = share_of(5, client="a"), share_of(5, client="b")
    first, second = admission.admit(early, "thumbnail"), admission.admit(late, "thumbnail")
    first.input_done()
    with pytest.raises(AdmissionError) as busy:
        second.input_done()
    assert busy.value.code == ErrorCode.BUSY
    second.close()
    first.close()
    assert admission.pool.admitted == admission.pool.receiving == 0


def test_disk_admission_counts_what_others_announced(tmp_path: Path) -> None:
    """Announced sizes are only numbers here: nothing is written. Half the free space is
    kept in reserve; a job announcing 60 % of the rest fits, a second one no longer does."""
    free_mib = shutil.disk_usage(tmp_path).free // MIB
    admissible = free_mib // 2
    admission = admission_for(
        tmp_path, storage={"reserve_mb": free_mib - admissible}, limits={"max_upload_mb": 1e6}
    )
    share = share_of(10)
    announced = admissible * 6 // 10 * MIB
    with admission.admit(share, "thumbnail", [announced]):
        assert refusal(admission, share, [announced]) == ErrorCode.TOO_LARGE
    with admission.admit(share, "thumbnail", [announced]):  # given back: it fits again
        pass


def test_a_disk_refusal_does_not_tell_the_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How much the server's disk has free is the operator's business: a TOO_LARGE
    refusal says only that the asked-for bytes do not fit now, in no unit or field."""
    free = 700 * MIB + 12345

    def disk_usage(path: object) -> object:
        return type("usage", (), {"total": 10 * free, "used": 9 * free, "free": free})()

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    admission = admission_for(tmp_path, storage={"reserve_mb": 100})
    asked = 650 * MIB
    with pytest.raises(AdmissionError) as refused:
        admission.admit(share_of(1), "thumbnail", [asked])
    error = refused.value
    assert error.code == ErrorCode.TOO_LARGE
    assert str(asked) in error.message  # what the client asked for is fine to repeat
    assert error.details is None
    available = free - 100 * MIB
    told = error.message + repr(error.details)
    for amount in (free, available, available // MIB, free // MIB, available // 1024):
        assert str(amount) not in told
