"""Every operation on every file of the generated odd corpus (issue 13, item 3).

The files are made here with FFmpeg's lavfi sources (tests/oddmedia.py) and cached per
recipe and FFmpeg version; each is odd in one way users' files are. The cases and checks
are the third-party corpus's (corpus_cases), plus concat of each file with itself. Besides
the checks here, the server holds every output to its operation's promise (item 2), so a
wrong result is a JOB_FAILED, which fails the case.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from ffserve.service.server import Endpoints
from tests import oddmedia
from tests.e2e.corpus_cases import CASES, approx, facts, run_case, same_kinds
from tests.helpers import connect, duration, probe, run_uploads

pytestmark = pytest.mark.odd_corpus

NAMES = [r.name for r in oddmedia.RECIPES]
# The default run: the files of issue 13's three classes and of the bugs this corpus found,
# and one of each other kind of oddity (rotation, cover art). The
# rest run with FFSERVE_FULL_ODD_CORPUS=1 (`just test-odd-corpus`): about 3 min in all,
# against 1.5 min for the default run, on 2 busy cores.
DEFAULT = frozenset(
    {
        "mkv_no_cues.mkv",
        "mkv_cues_removed.mkv",
        "mpeg2_mp2_program.vob",
        "mpeg2_mp2_svcd.mpg",
        "mkv_font_attachment.mkv",
        "mka_cover_attachment.mkv",
        "h264_aac_timecode.mov",
        "mkv_starts_at_5s.mkv",
        "mkv_negative_ts.mkv",
        "mp4_edit_list.mp4",
        "mp4_negative_ts.mp4",
        "mp4_rotated_90.mp4",
        "h264_one_frame.mp4",
        "aac_with_cover.m4a",
    }
)
FULL = os.environ.get("FFSERVE_FULL_ODD_CORPUS") == "1"


def pairs(cases: list[str]) -> list[Any]:
    """(case, name) parameters, the heavy ones skipped unless the full run was asked for."""
    params = []
    for name in NAMES:
        for case in cases:
            marks: list[Any] = []
            if name not in DEFAULT and not FULL:
                marks.append(pytest.mark.skip(reason="FFSERVE_FULL_ODD_CORPUS=1 runs it"))
            params.append(pytest.param(case, name, marks=marks, id=f"{case}-{name}"))
    return params


@pytest.fixture(scope="session")
def odd_corpus(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path | oddmedia.Unavailable]:
    cache = getattr(pytestconfig, "cache", None)
    root = cache.mkdir("oddmedia") if cache is not None else tmp_path_factory.mktemp("odd")
    return oddmedia.build(Path(root))


def odd_file(odd_corpus: dict[str, Path | oddmedia.Unavailable], name: str) -> Path:
    made = odd_corpus[name]
    if isinstance(made, oddmedia.Unavailable):
        pytest.skip(f"{name}: {made}")
    return made


@pytest.mark.parametrize(("case", "name"), pairs(list(CASES)))
async def test_odd_corpus(
    server: Endpoints,
    odd_corpus: dict[str, Path | oddmedia.Unavailable],
    tmp_path: Path,
    case: str,
    name: str,
) -> None:
    await run_case(server.url, CASES[case], odd_file(odd_corpus, name), tmp_path)


@pytest.mark.parametrize(("case", "name"), pairs(["concat"]))
async def test_odd_concat_with_itself(
    server: Endpoints,
    odd_corpus: dict[str, Path | oddmedia.Unavailable],
    tmp_path: Path,
    case: str,
    name: str,
) -> None:
    path = odd_file(odd_corpus, name)
    f = facts(path)
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await run_uploads(client, "concat", {"file_count": 2}, [path, path], "c1")
    final = result.final
    if not f.timeline:
        assert final["type"] == "error", final
        assert final["code"] == "UNSUPPORTED_MEDIA", final
        return
    assert f.duration is not None
    assert final["type"] == "completed", final
    saved = result.save(tmp_path)
    info = probe(saved)
    same_kinds(f, info)
    approx(duration(info), 2 * f.duration, 2 * f.slack)
