"""Every operation on every file of the real-media corpus (third-party files, see its README).

Each case either completes with an output whose probe shows what the operation means, or is
refused with the specific code for why it cannot apply (no video, no audio, a still image).
The cases and their checks are in corpus_cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ffserve.service.server import Endpoints
from tests.e2e.corpus_cases import CASES, run_case
from tests.helpers import CORPUS

if not CORPUS.is_dir():
    pytest.skip(f"no media corpus at {CORPUS}", allow_module_level=True)

pytestmark = pytest.mark.corpus

NOT_MEDIA = {"README.md", "SHA256SUMS", "SOURCES.tsv"}
FILES = sorted(p.name for p in CORPUS.iterdir() if p.is_file() and p.name not in NOT_MEDIA)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("case", list(CASES))
async def test_corpus(server: Endpoints, tmp_path: Path, case: str, name: str) -> None:
    out_dir = tmp_path / name
    out_dir.mkdir()
    await run_case(server.url, CASES[case], CORPUS / name, out_dir)
