"""`just cluster` (scripts/cluster.py) as an operator runs it: N instances and HAProxy come
up, a job submitted through HAProxy with `ffserve submit` completes, and Ctrl-C stops
everything, leaving no process and no temporary directory."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench.server import free_port
from scripts.cluster import REPO, find_haproxy
from tests.conftest import Media
from tests.helpers import probe

pytestmark = pytest.mark.skipif(find_haproxy() is None, reason="haproxy is not installed")


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cluster_serves_through_haproxy_and_ctrl_c_leaves_nothing(
    media: Media, tmp_path: Path
) -> None:
    port, instance_port = free_port(), free_port("127.0.0.11")
    args = [sys.executable, "-m", "scripts.cluster", "2", "--port", str(port)]
    cluster = subprocess.Popen(
        [*args, "--instance-port", str(instance_port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert cluster.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in cluster.stdout or ()])
    reader.start()
    try:
        while True:
            line = lines.get(timeout=60)
            if line.startswith("cluster: ws://"):
                break
        work = re.search(r"(/\S+)/haproxy\.sock", line)
        assert work is not None, line
        started = children(cluster.pid)
        assert len(started) == 3  # two instances and HAProxy
        out = tmp_path / "out"
        job = ["submit", str(media.clip), "--op", "speed", "--opt", "speed_factor=2"]
        url = f"ws://127.0.0.1:{port}/"
        submit = subprocess.run(
            [sys.executable, "-m", "ffserve", *job, "--url", url, "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submit.returncode == 0, submit.stderr
        (output,) = out.iterdir()
        assert float(probe(output)["format"]["duration"]) == pytest.approx(1.0, abs=0.1)
        cluster.send_signal(signal.SIGINT)
        assert cluster.wait(timeout=60) == 0
        assert not any(alive(pid) for pid in started)
        assert not Path(work.group(1)).exists()
    finally:
        if cluster.poll() is None:
            cluster.kill()
            cluster.wait()
        reader.join(timeout=5)
