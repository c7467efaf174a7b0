"""The sandbox, probed from inside: each protection stops what it is for.

A probe is a small Python program run through the very path FFmpeg takes
(`run_capture` with the server's `Confinement`: bwrap, seccomp, rlimits set before
exec). Every probe also runs unconfined (mode "off", rlimits only, or none), where it
must succeed: so each test shows both that the probe can do the thing and that the
protection stops it, and fails if the protection is removed.
"""

from __future__ import annotations

import errno
import json
import resource
import shutil
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ffserve.config import Config
from ffserve.errors import ErrorCode
from ffserve.ffmpeg.ops import ffmpeg_prefix
from ffserve.ffmpeg.process import ProcessFailed, run_capture, run_ffmpeg
from ffserve.ffmpeg.progress import ProgressParser
from ffserve.ffmpeg.sandbox import ChildLimits, Confinement, _base_options, open_confinement
from ffserve.ffmpeg.seccomp import X86_64_DENIED, x86_64_filter
from ffserve.ffmpeg.spawn import SandboxFailed
from ffserve.jobs.lifecycle import ffmpeg_failure
from tests.conftest import test_config

# The system's Python (under /usr, so visible in the sandbox), not the venv's.
PYTHON = "/usr/bin/python3"
MIB = 1024 * 1024
pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None or not Path(PYTHON).exists(),
    reason="needs bubblewrap and /usr/bin/python3 (.ci/run installs both)",
)


def confinement(tmp_path: Path, mode: str = "required", **sandbox: Any) -> Confinement:
    config: Config = test_config(tmp_path, sandbox={"mode": mode, **sandbox})
    return open_confinement(config, [shutil.which("ffmpeg") or "ffmpeg"])


def unbounded() -> Confinement:
    """No sandbox and limits far above anything a probe does: the control runs."""
    huge = 1 << 40
    return Confinement("off", None, ChildLimits(huge, huge, 3600, 4096, 4096, 0))


async def probe(how: Confinement, workdir: Path, code: str) -> dict[str, Any]:
    """Run `code` as FFmpeg is run (`run_ffmpeg`: the job's dir writable), in `workdir`;
    it prints one JSON object, kept in the job dir (FFmpeg's stdout is its progress)."""
    program = f"import sys; sys.stdout = open('result.json', 'w')\n{code}"
    with trio.fail_after(30):
        await run_ffmpeg(
            [PYTHON, "-c", program],
            confinement=how,
            workdir=workdir,
            parser=ProgressParser(None),
            on_progress=lambda _: None,
            grace=1,
        )
    result: dict[str, Any] = json.loads((workdir / "result.json").read_text())
    return result


async def probe_read_only(how: Confinement, workdir: Path, code: str) -> dict[str, Any]:
    """Run `code` as ffprobe is run (`run_capture`: the job's dir read-only)."""
    with trio.fail_after(30):
        out = await run_capture([PYTHON, "-c", code], confinement=how, workdir=workdir, grace=1)
    result: dict[str, Any] = json.loads(out)
    return result


def attempt(action: str) -> str:
    """A probe that does `action` and reports "ok" or the errno's name."""
    body = textwrap.indent(action, "    ")
    return f"""
import errno, json, os, socket
try:
{body}
    result = "ok"
except OSError as exc:
    result = errno.errorcode.get(exc.errno, str(exc.errno))
except MemoryError:
    result = "MemoryError"
print(json.dumps({{"result": result}}))
"""


@pytest.fixture
def jobs(tmp_path: Path) -> tuple[Path, Path]:
    """Two job dirs of one server; the second holds a file the first must not see."""
    root = tmp_path / "work" / "ffserve-x"
    mine, other = root / "job-mine", root / "job-other"
    for path in (mine, other):
        path.mkdir(parents=True)
    (other / "input").write_bytes(b"another client's media")
    return mine, other


async def test_no_network(tmp_path: Path, jobs: tuple[Path, Path]) -> None:
    """A TCP connection to a listener on this machine's loopback: refused by seccomp
    (socket() itself), and with no filter, unreachable from the empty net namespace."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        connect = attempt(f"socket.create_connection(('127.0.0.1', {port}), timeout=5)")
        assert (await probe(unbounded(), jobs[0], connect))["result"] == "ok"
        confined = await probe(confinement(tmp_path), jobs[0], connect)
        assert confined["result"] == "EAFNOSUPPORT"  # the seccomp filter
        no_filter = attrs.evolve(confinement(tmp_path))
        assert no_filter.sandbox is not None
        no_filter = attrs.evolve(no_filter, sandbox=attrs.evolve(no_filter.sandbox, seccomp=None))
        alone = await probe(no_filter, jobs[0], connect)
        assert alone["result"] in ("ENETUNREACH", "ECONNREFUSED")  # no interface up
        unix = attempt("socket.socket(socket.AF_UNIX).close()")
        assert (await probe(confinement(tmp_path), jobs[0], unix))["result"] == "ok"
    finally:
        listener.close()


@pytest.mark.parametrize(
    "target",
    ["other job", "/etc/passwd", "server config", "server source"],
)
async def test_nothing_of_the_host_is_readable(
    tmp_path: Path, jobs: tuple[Path, Path], target: str
) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text("[auth]\nsecret = 'do not read'\n")
    path = {
        "other job": jobs[1] / "input",
        "/etc/passwd": Path("/etc/passwd"),
        "server config": config_file,
        "server source": Path(__file__),
    }[target]
    read = attempt(f"open({str(path)!r}, 'rb').read()")
    assert (await probe(unbounded(), jobs[0], read))["result"] == "ok"
    assert (await probe(confinement(tmp_path), jobs[0], read))["result"] == "ENOENT"


@pytest.mark.parametrize("where", ["/usr/lib/x", "/tmp/x", "/x", "/dev/shm/x", "other job"])
async def test_only_its_own_dir_is_writable(
    tmp_path: Path, jobs: tuple[Path, Path], where: str
) -> None:
    mine, other = jobs
    confined = confinement(tmp_path)
    write_mine = attempt(f"open({str(mine / 'output')!r}, 'wb').write(b'x')")
    assert (await probe(confined, mine, write_mine))["result"] == "ok"
    path = str(other / "output") if where == "other job" else where
    write = attempt(f"open({path!r}, 'wb').write(b'x')")
    result = (await probe(confined, mine, write))["result"]
    assert result in ("EROFS", "ENOENT", "EACCES", "EPERM"), result
    assert not written_outside(other)
    # ffprobe sees the job dir read-only.
    assert (await probe_read_only(confined, mine, write_mine))["result"] == "EROFS"


def written_outside(other: Path) -> bool:
    return (other / "output").exists() or Path("/x").exists() or Path("/dev/shm/x").exists()


async def test_no_process_can_be_started(tmp_path: Path, jobs: tuple[Path, Path]) -> None:
    """Forking a shell (or anything) fails: only threads may be created."""
    shell = attempt("import subprocess; subprocess.run(['/bin/sh', '-c', 'true'], check=True)")
    fork = attempt("pid = os.fork()\nif pid == 0: os._exit(0)\nos.waitpid(pid, 0)")
    thread = attempt("import threading; t = threading.Thread(target=print); t.start(); t.join()")
    for code in (shell, fork):
        assert (await probe(unbounded(), jobs[0], code))["result"] == "ok"
        assert (await probe(confinement(tmp_path), jobs[0], code))["result"] == "EPERM"
    assert (await probe(confinement(tmp_path), jobs[0], thread))["result"] == "ok"


async def test_memory_is_bounded(tmp_path: Path, jobs: tuple[Path, Path]) -> None:
    allocate = attempt("bytearray(400 * 1024 * 1024)")
    assert (await probe(unbounded(), jobs[0], allocate))["result"] == "ok"
    small = confinement(tmp_path, memory_mb=200)
    assert (await probe(small, jobs[0], allocate))["result"] == "MemoryError"


async def test_file_size_is_bounded(tmp_path: Path, jobs: tuple[Path, Path]) -> None:
    """Past the output cap a write fails (Python ignores SIGXFSZ; FFmpeg dies of it)."""
    config: Config = test_config(tmp_path, limits={"max_output_mb": 1})
    capped = attrs.evolve(confinement(tmp_path), limits=ChildLimits.from_config(config))
    write = attempt(f"open({str(jobs[0] / 'big')!r}, 'wb').write(bytes(2 * 1024 * 1024))")
    assert (await probe(unbounded(), jobs[0], write))["result"] == "ok"
    assert (await probe(capped, jobs[0], write))["result"] == "EFBIG"


async def test_limits_are_in_place_before_exec(tmp_path: Path, jobs: tuple[Path, Path]) -> None:
    """What the exec'd program finds: its rlimits, niceness, no capabilities, no new
    privileges, seccomp filtering, namespaces of its own, an empty environment."""
    code = """
import json, os, resource
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({
    "as": resource.getrlimit(resource.RLIMIT_AS)[0],
    "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    "nice": os.nice(0),
    "nnp": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "capeff": status["CapEff"].strip(),
    "env": sorted(os.environ),
    "pid": os.getpid(),
}))
"""
    how = confinement(tmp_path)
    seen = await probe(how, jobs[0], code)
    limits = how.limits
    assert seen["as"] == limits.memory_bytes and seen["fsize"] == limits.file_bytes
    assert seen["nofile"] == limits.open_files and seen["nice"] == limits.niceness
    assert (seen["nnp"], seen["seccomp"], seen["capeff"]) == ("1", "2", "0000000000000000")
    # PWD from --chdir; LC_CTYPE is Python's own locale coercion.
    assert set(seen["env"]) <= {"PATH", "PWD", "LC_CTYPE"}
    assert seen["pid"] < 10  # its own PID namespace


async def test_mode_off_and_required(tmp_path: Path) -> None:
    assert confinement(tmp_path, mode="off").sandbox is None
    assert confinement(tmp_path, mode="auto").sandbox is not None
    with pytest.raises(Exception, match="bubblewrap"):
        confinement(tmp_path, mode="required", bwrap="/nonexistent/bwrap")
    fallback = confinement(tmp_path, mode="auto", bwrap="/nonexistent/bwrap")
    assert fallback.sandbox is None and not fallback.describe()["namespaces"]


async def test_a_failing_child_is_reported(tmp_path: Path, jobs: tuple[Path, Path]) -> None:
    with pytest.raises(ProcessFailed) as failed:
        await probe_read_only(confinement(tmp_path), jobs[0], "raise SystemExit(3)")
    assert failed.value.returncode == 3


def test_the_filter_denies_what_it_lists() -> None:
    program = x86_64_filter()
    assert len(program) % 8 == 0 and len(program) // 8 < 4096
    constants = {
        int.from_bytes(program[i + 4 : i + 8], sys.byteorder) for i in range(0, len(program), 8)
    }
    for name in ("ptrace", "mount", "bpf", "keyctl", "unshare", "setns", "fork", "vfork"):
        assert X86_64_DENIED[name] in constants
    assert errno.EAFNOSUPPORT | 0x00050000 in constants


async def test_a_real_ffmpeg_past_its_cpu_time_ends_with_timeout(
    tmp_path: Path, jobs: tuple[Path, Path]
) -> None:
    """FFmpeg traps SIGXCPU and exits 255 with nothing said at `-loglevel error`; that
    still reads as the CPU limit, TIMEOUT. Without RLIMIT_CPU the encode below would run
    for minutes and the test's deadline would fail it."""
    how = confinement(tmp_path)
    cpu_capped = attrs.evolve(how, limits=attrs.evolve(how.limits, cpu_s=1))
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"

    def encode(seconds: int) -> list[str]:
        source = f"testsrc2=size=1280x720:rate=30:duration={seconds}"
        return [
            *ffmpeg_prefix(ffmpeg, 1),
            *["-f", "lavfi", "-i", source, "-c:v", "libx264", "-preset", "medium", "out.mp4"],
        ]

    async def run(how: Confinement, seconds: int) -> None:
        await run_ffmpeg(
            encode(seconds),
            confinement=how,
            workdir=jobs[0],
            parser=ProgressParser(None),
            on_progress=lambda _: None,
            grace=1,
        )

    with trio.fail_after(60):
        await run(how, 1)  # the control: the same encode, short, within its limits
        with pytest.raises(ProcessFailed) as failed:
            await run(cpu_capped, 600)
    error = ffmpeg_failure(failed.value, cpu_capped.limits, [str(jobs[0])])
    assert error.code == ErrorCode.TIMEOUT, (failed.value.returncode, failed.value.stderr_tail)
    assert "1 s of CPU" in error.message


@pytest.mark.parametrize(
    "breakage",
    [
        ("--ro-bind", "/nonexistent", "/x"),  # fails in the child, after reporting it
        ("--nonexistent-option",),  # fails before there is a child
    ],
)
async def test_a_sandbox_that_fails_is_the_servers_fault(
    tmp_path: Path, jobs: tuple[Path, Path], breakage: tuple[str, ...]
) -> None:
    """bwrap failing before the tool runs is INTERNAL_ERROR, and what it printed (host
    paths, its own options) stays in the server's log."""
    how = confinement(tmp_path)
    assert how.sandbox is not None
    broken = attrs.evolve(how.sandbox, base=(*how.sandbox.base, *breakage))
    with pytest.raises(SandboxFailed) as failed, trio.fail_after(30):
        await probe_read_only(attrs.evolve(how, sandbox=broken), jobs[0], "print('{}')")
    assert failed.value.code == ErrorCode.INTERNAL_ERROR
    assert "nonexistent" not in failed.value.message
    assert not isinstance(failed.value, ProcessFailed)  # not the input's fault


def test_unconfined_children_are_not_held_to_the_task_limit() -> None:
    """RLIMIT_NPROC counts every task of the uid: unconfined, that is the whole server."""
    limits = ChildLimits(1 << 30, 1 << 20, 60, 256, 64, 0)
    assert resource.RLIMIT_NPROC in dict(limits.rlimits(confined=True))
    assert resource.RLIMIT_NPROC not in dict(limits.rlimits(confined=False))


def test_an_ffmpeg_outside_the_mounted_tree_is_bound_in() -> None:
    """/usr and the top-level loader links are mounted; an FFmpeg elsewhere (even one whose
    path merely starts like them) is bound read-only on its own."""
    bound = _base_options(["/usr/bin/ffmpeg", "/library/ffmpeg", "/opt/ff/ffprobe"])
    pairs = {(bound[i + 1], bound[i + 2]) for i, a in enumerate(bound) if a == "--ro-bind"}
    assert ("/library/ffmpeg", "/library/ffmpeg") in pairs
    assert ("/opt/ff/ffprobe", "/opt/ff/ffprobe") in pairs
    assert ("/usr/bin/ffmpeg", "/usr/bin/ffmpeg") not in pairs
