"""Every operation on every file of the real-media corpus (third-party files, see its README).

Each case either completes with an output whose probe shows what the operation means, or is
refused with the specific code for why it cannot apply (no video, no audio, a still image).
The cases and their checks are in corpus_cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ffserve.service.server import Endpoints
from tests.e2e.corpus_cases import CASES, facts
from tests.helpers import CORPUS, connect, probe

if not CORPUS.is_dir():
    pytest.skip(f"no media corpus at {CORPUS}", allow_module_level=True)

pytestmark = pytest.mark.corpus

NOT_MEDIA = {"README.md", "SHA256SUMS", "SOURCES.tsv"}
FILES = sorted(p.name for p in CORPUS.iterdir() if p.is_file() and p.name not in NOT_MEDIA)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("case", list(CASES))
async def test_corpus(server: Endpoints, tmp_path: Path, case: str, name: str) -> None:
    spec = CASES[case]
    f = facts(CORPUS / name)
    with trio.fail_after(60):
        async with connect(server.url) as client:
            result = await client.run(spec.operation, CORPUS / name, spec.options(f))
    final = result.final
    refusal = spec.refusal(f)
    if refusal is not None:
        assert final["type"] == "error", final
        assert final["code"] == refusal, final
        return
    assert final["type"] == "completed", final
    out_dir = tmp_path / name
    out_dir.mkdir()
    path = result.save(out_dir)
    spec.check(f, path, probe(path))
