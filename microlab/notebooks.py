"""Run the notebooks top to bottom, headless, against a sandbox of their own.

    python -m microlab.notebooks            # every notebook in notebooks/, in order
    python -m microlab.notebooks 03 07      # only these (by number or name)

Starts a sandbox on free ports with a broker namespace of its own (a learner's `make up` is
never touched), then for each notebook: converts the jupytext file to a notebook, runs it with
nbclient in a fresh kernel (a per-cell timeout; cells tagged `raises-exception` may raise, any
other error fails the notebook), writes the executed copy to `reports/notebooks/`, and checks
that the notebook left the sandbox as it found it (then puts it back anyway, so one failure
does not spill into the next notebook). One verdict line per notebook, the total time, and exit
code 1 when any failed. `--existing` runs them against the sandbox the environment points at
instead (a `make up` with `make lab`'s variables, or the compose stack from its JupyterLab).

To see that a notebook fails when the pattern it teaches is broken, run the runner of a copy of
the project whose `patterns/` has the mutant (tests/notebooks does).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from microlab.lab import Lab, sandbox_env
from microlab.launcher import SandboxError, SandboxProcess
from microlab.processes import ROOT
from microlab.rabbit import delete_namespace

NOTEBOOKS = ROOT / "notebooks"
REPORTS = ROOT / "reports" / "notebooks"
CELL_TIMEOUT = 120


@dataclass
class Verdict:
    name: str
    passed: bool
    seconds: float
    detail: str = ""

    def line(self) -> str:
        word = "PASS" if self.passed else "FAIL"
        return f"{word}  {self.name:<28} {self.seconds:6.1f} s  {self.detail}".rstrip()


def notebook_files(selection: list[str] | None = None) -> list[Path]:
    """The notebooks, in reading order; `selection` picks by number prefix or name."""
    files = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.py"))
    if not selection:
        return files
    chosen = [path for path in files
              if any(path.stem == wanted or path.stem.startswith(f"{wanted}-")
                     or path.stem.split("-", 1)[0] == wanted for wanted in selection)]
    unknown = [wanted for wanted in selection
               if not any(path.stem.split("-", 1)[0] == wanted or path.stem == wanted
                          or path.stem.startswith(f"{wanted}-") for path in files)]
    if unknown:
        raise SystemExit(f"no notebook called {', '.join(unknown)}; there are: "
                         + ", ".join(path.stem for path in files))
    return chosen


def kernel_support() -> dict[str, str]:
    """What every kernel needs whatever sandbox it talks to: the project importable, no ANSI
    colours in tracebacks (they are read in reports and CI logs)."""
    ipython_dir = Path(tempfile.mkdtemp(prefix="microlab-ipython-"))
    profile = ipython_dir / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        'c.InteractiveShell.colors = "nocolor"\n'
        # Every kernel says it runs over TCP without encryption: true on loopback, and noise.
        'c.IPKernelApp.log_level = "ERROR"\n')
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"IPYTHONDIR": str(ipython_dir), "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}


def kernel_environment(state: dict, run_dir: Path) -> dict[str, str]:
    """A kernel pointed at one sandbox: its URLs, and what every kernel needs."""
    return {**sandbox_env(state, run_dir), **kernel_support()}


def first_error(notebook) -> str:
    """The last line of the first error output: what a reader needs to see first."""
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell {index}: {output['ename']}: {output['evalue']}"[:300]
    return ""


def run_notebook(path: Path, lab: Lab, out_dir: Path, cell_timeout: int) -> Verdict:
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    began = time.monotonic()
    notebook = jupytext.read(path)
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    lab.snapshot = lab.take_snapshot()
    passed, detail = True, ""
    try:
        client.execute()
    except CellTimeoutError as error:
        passed, detail = False, f"a cell ran over {cell_timeout} s: {str(error)[:200]}"
    except CellExecutionError:
        passed, detail = False, first_error(notebook) or "a cell raised"
    except Exception as error:  # the kernel died, or could not start
        passed, detail = False, f"{type(error).__name__}: {error}"[:300]
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out_dir / f"{path.stem}.ipynb")
    left = lab.tidy()
    if left and passed:
        passed, detail = False, "left the sandbox changed: " + "; ".join(left)[:300]
    return Verdict(path.stem, passed, time.monotonic() - began, detail)


def run_all(files: list[Path], out: Path, cell_timeout: int) -> list[Verdict]:
    """Each notebook in turn against the sandbox the environment points at."""
    lab = Lab.connect()
    verdicts = []
    for path in files:
        print(f"  ... {path.stem}", flush=True)
        try:
            verdict = run_notebook(path, lab, out, cell_timeout)
        except Exception:
            verdict = Verdict(path.stem, False, 0.0, traceback.format_exc(limit=2)[-300:])
        verdicts.append(verdict)
        print(verdict.line(), flush=True)
    return verdicts


def on_own_sandbox(files: list[Path], out: Path, cell_timeout: int) -> tuple[list[Verdict], int]:
    """Start a sandbox on free ports, run the notebooks on it, stop it; (verdicts, its exit)."""
    run_root = Path(tempfile.mkdtemp(prefix="microlab-notebooks-"))
    print(f"notebooks: starting a sandbox for {len(files)} notebook(s) ...", flush=True)
    sandbox = SandboxProcess(run_root / "run")
    try:
        sandbox.start()
    except SandboxError as error:
        print(f"notebooks: the sandbox did not start:\n{error}", file=sys.stderr)
        return [], 2
    try:
        os.environ.update(kernel_environment(sandbox.state, sandbox.run_dir.path))
        print(f"notebooks: sandbox up in {sandbox.state['startup_s']:.1f} s; "
              f"executed copies go to {out}", flush=True)
        verdicts = run_all(files, out, cell_timeout)
    finally:
        code = sandbox.stop()
        delete_namespace(sandbox.state.get("amqp_url", ""), sandbox.namespace)
    if code != 0:
        print(f"notebooks: the sandbox exited with {code}:\n{sandbox.output()[-2000:]}")
    return verdicts, code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microlab.notebooks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="numbers or names (default: all)")
    parser.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--existing", action="store_true",
                        help="run against the sandbox the environment points at (the "
                             "variables `make lab` sets, or a compose stack) instead of one of "
                             "their own")
    args = parser.parse_args(argv)
    files = notebook_files(args.notebooks)
    began = time.monotonic()
    if args.existing:
        os.environ.update(kernel_support())
        verdicts, code = run_all(files, args.out, args.cell_timeout), 0
    else:
        verdicts, code = on_own_sandbox(files, args.out, args.cell_timeout)
        if code == 2 and not verdicts:
            return 2
    failed = [verdict for verdict in verdicts if not verdict.passed]
    print(f"notebooks: {len(verdicts) - len(failed)} passed, {len(failed)} failed "
          f"in {time.monotonic() - began:.1f} s")
    return 1 if failed or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
