"""`make lab`: JupyterLab on 127.0.0.1, pointed at the running sandbox.

    python -m microlab.jupyter [--port 8888] [--no-sandbox]

Uses the sandbox of `.microlab/` (or MICROLAB_RUN_DIR) when one is running; otherwise starts
one on the default ports for as long as JupyterLab runs (`--no-sandbox` says how to start one
instead). The kernels get the sandbox's URLs in their environment (the variables
`microlab.lab.Lab` reads) and the project on their path. The notebooks are jupytext files
(`notebooks/NN-*.py`): JupyterLab is told to open them as notebooks, and saving one writes the
`.py` back without outputs. A random token guards the server; the URL printed carries it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from microlab.lab import DEFAULT_RUN_DIR, sandbox_env
from microlab.launcher import SandboxError, SandboxProcess
from microlab.notebooks import NOTEBOOKS
from microlab.processes import ROOT
from microlab.supervisor import RunDir, supervisor_alive

# Open `.py` notebooks as notebooks on a double click (jupytext's viewer), not as text.
LAB_SETTINGS = {"@jupyterlab/docmanager-extension/plugin.jupyterlab-settings":
                {"defaultViewers": {"python": "Jupytext Notebook"}}}


def lab_settings_dir(run_dir: Path) -> Path:
    folder = run_dir / "jupyterlab-settings"
    for name, settings in LAB_SETTINGS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2))
    return folder


def lab_command(port: int, token: str) -> list[str]:
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1",
               f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={NOTEBOOKS}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # JupyterLab refuses root without it (CI, containers)
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microlab.jupyter", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("LAB_PORT", "8888")))
    parser.add_argument("--no-sandbox", action="store_true",
                        help="do not start a sandbox when none is running")
    args = parser.parse_args(argv)
    # A SIGTERM (e.g. `kill`, a closing terminal) must stop the sandbox we start, as Ctrl-C does.
    # A second one (a process group signalled twice) must not cut that cleanup short.
    def stop_on_sigterm(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop_on_sigterm)

    run_dir = RunDir(Path(os.environ.get("MICROLAB_RUN_DIR") or DEFAULT_RUN_DIR))
    state = run_dir.read_state()
    started: SandboxProcess | None = None
    if not (supervisor_alive(state) and state.get("ready")):
        if args.no_sandbox:
            print("lab: no sandbox is running. Start one in another terminal with `make up`, "
                  "then run `make lab` again.", file=sys.stderr)
            return 2
        print("lab: no sandbox is running; starting one (it stops with JupyterLab) ...",
              flush=True)
        started = SandboxProcess(run_dir.path, "--port-offset", "0")
        try:
            state = started.start().state
        except SandboxError as error:
            print(f"lab: the sandbox did not start:\n{error}\n"
                  "Try `make up` in another terminal to see why.", file=sys.stderr)
            return 2

    token = secrets.token_hex(16)
    env = {**os.environ, **sandbox_env(state, run_dir.path), "PYTHONPATH": str(ROOT),
           "JUPYTERLAB_SETTINGS_DIR": str(lab_settings_dir(run_dir.path))}
    print(f"lab: sandbox gateway {state['urls']['gateway']}\n"
          f"lab: JupyterLab at http://127.0.0.1:{args.port}/lab?token={token}\n"
          "lab: open 00-tour.py to begin; Ctrl-C stops JupyterLab", flush=True)
    server = subprocess.Popen(lab_command(args.port, token), cwd=NOTEBOOKS, env=env)
    try:
        return server.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        if started:
            started.stop()


if __name__ == "__main__":
    sys.exit(main())
