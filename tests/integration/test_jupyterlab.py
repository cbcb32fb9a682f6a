"""`make lab`: JupyterLab on loopback, behind a token, opening the jupytext notebooks as
notebooks, pointed at a running sandbox."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from microlab.launcher import SandboxProcess
from microlab.processes import ROOT
from microlab.topology import free_ports

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jupyterlab(sandbox: SandboxProcess, tmp_path_factory: pytest.TempPathFactory):
    port = free_ports(1)[0]
    output = tmp_path_factory.mktemp("lab") / "lab.out"
    env = {"MICROLAB_RUN_DIR": str(sandbox.run_dir.path), "PATH": "/usr/bin:/bin"}
    with open(output, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "microlab.jupyter", "--port", str(port),
                                   "--no-sandbox"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (token := re.search(r"token=([0-9a-f]{32})", output.read_text())):
            assert server.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                requests.get(f"{base}/api/status", timeout=2)
                break
            except requests.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline, output.read_text()
                time.sleep(0.3)
        yield base, token.group(1), output.read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_printed_url_carries_the_token_the_server_requires(jupyterlab) -> None:
    base, token, printed = jupyterlab
    assert f"{base}/lab?token={token}" in printed
    assert requests.get(f"{base}/api/status", timeout=10).status_code == 403
    assert requests.get(f"{base}/api/status", params={"token": token}, timeout=10).ok


def test_a_jupytext_file_opens_as_a_notebook_with_no_outputs(jupyterlab) -> None:
    base, token, _ = jupyterlab
    answer = requests.get(f"{base}/api/contents/00-tour.py",
                          params={"type": "notebook", "content": 1, "token": token}, timeout=30)
    assert answer.status_code == 200, answer.text
    notebook = answer.json()["content"]
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert "Lab.connect()" in code[0]["source"]
    assert all(not cell["outputs"] for cell in code)


def test_without_a_sandbox_it_says_how_to_start_one(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "microlab.jupyter", "--no-sandbox"], cwd=ROOT,
                          env={"MICROLAB_RUN_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "make up" in done.stderr and "Traceback" not in done.stderr
