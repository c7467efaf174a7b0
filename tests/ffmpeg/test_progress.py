from __future__ import annotations

import pytest

from ffserve.ffmpeg.progress import ProgressParser, Throttle


def block(us: int | str, state: str = "continue") -> bytes:
    return f"frame=1\nout_time_us={us}\nspeed=1x\nprogress={state}\n".encode()


def test_percentage_from_out_time() -> None:
    parser = ProgressParser(10.0)
    assert parser.feed(block(2_500_000))
    assert parser.percentage == 25.0


def test_split_lines_across_chunks() -> None:
    parser = ProgressParser(4.0)
    data = block(1_000_000)
    parser.feed(data[:13])
    assert parser.percentage == 0.0
    parser.feed(data[13:])
    assert parser.percentage == 25.0


def test_monotonic_and_capped_until_end() -> None:
    parser = ProgressParser(2.0)
    parser.feed(block(1_500_000))
    assert not parser.feed(block(1_000_000))  # FFmpeg may report an earlier time
    assert parser.percentage == 75.0
    parser.feed(block(5_000_000))
    assert parser.percentage == 99.0  # not 100 until FFmpeg says it is done
    assert parser.feed(block(2_000_000, "end"))
    assert parser.percentage == 100.0 and parser.finished


@pytest.mark.parametrize("value", ["N/A", "-", "", "12abc"])
def test_garbage_values_are_ignored(value: str) -> None:
    parser = ProgressParser(2.0)
    parser.feed(block(value))
    assert parser.percentage == 0.0


def test_unknown_duration_only_reports_the_end() -> None:
    parser = ProgressParser(None)
    assert not parser.feed(block(1_000_000))
    assert parser.feed(block(2_000_000, "end"))


def test_long_garbage_does_not_grow_the_buffer() -> None:
    parser = ProgressParser(1.0)
    parser.feed(b"x" * 100_000)
    assert len(parser._pending) <= 4096


def test_throttle() -> None:
    throttle = Throttle(0.25)
    assert throttle.ready(10.0)
    assert not throttle.ready(10.1)
    assert throttle.ready(10.3)


def test_parser_reads_speed_and_estimates_time_left() -> None:
    parser = ProgressParser(10.0)
    assert parser.eta_s() is None
    parser.feed(b"out_time_us=N/A\nspeed=N/A\nprogress=continue\n")
    assert (parser.speed, parser.eta_s()) == (None, None)
    parser.feed(b"out_time_us=4000000\nspeed=2.5x\nprogress=continue\n")
    assert (parser.speed, parser.eta_s(), parser.percentage) == (2.5, 2.4, 40.0)
    parser.feed(b"out_time_us=10000000\nspeed=   5x\nprogress=end\n")
    assert (parser.speed, parser.eta_s(), parser.percentage) == (5.0, 0.0, 100.0)
