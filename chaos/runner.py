"""Run one experiment of `chaos/` with the Chaos Toolkit, and write its verdict.

    python -m chaos.runner payments-outage                  # what `make chaos EXP=...` runs
    python -m chaos.runner inventory-latency --run-dir /tmp/other-sandbox/run

If a sandbox runs at the run dir (default `.microlab`, or MICROLAB_RUN_DIR) the experiment runs
against it; otherwise a throwaway sandbox is started on free ports for the run and stopped
afterwards. The experiment runs as `chaos run --journal-path ... chaos/<name>.json` in a child
process, with the sandbox's addresses in the environment variables the experiments read
(GATEWAY_URL, TOXIPROXY_URL, MICROLAB_RUN_DIR). The journal, the toolkit's log and the verdict
(`report.md`, `orders.png`) land in `reports/chaos/<name>/`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from chaos.report import Verdict, write_report
from microlab.launcher import SandboxProcess
from microlab.processes import ROOT
from microlab.rabbit import delete_namespace
from microlab.supervisor import RunDir, supervisor_alive
from microlab.topology import DEFAULT_AMQP_URL

EXPERIMENTS = ROOT / "chaos"
REPORTS = ROOT / "reports" / "chaos"
RUN_TIMEOUT = 600.0  # seconds: the longest experiment with its default durations is ~2 min


def experiment_names() -> list[str]:
    return sorted(path.stem for path in EXPERIMENTS.glob("*.json"))


def experiment_env(state: Mapping, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment `chaos run` needs to aim the experiments at this sandbox."""
    return {**os.environ, **(extra or {}),
            "GATEWAY_URL": state["urls"]["gateway"],
            "TOXIPROXY_URL": state["urls"]["chaos"],
            "MICROLAB_RUN_DIR": state["run_dir"],
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")]))}


def run_experiment(name: str, state: Mapping, out_dir: Path,
                   extra_env: Mapping[str, str] | None = None) -> Verdict:
    """`chaos run` the experiment against the sandbox of `state`, then write its verdict."""
    experiment = EXPERIMENTS / f"{name}.json"
    if not experiment.exists():
        raise SystemExit(f"no experiment {name!r}; there are: {', '.join(experiment_names())}")
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = out_dir / "journal.json"
    journal.unlink(missing_ok=True)
    chaos = Path(sys.executable).with_name("chaos")
    subprocess.run([str(chaos), "--no-version-check", "--log-file",
                    str(out_dir / "chaostoolkit.log"), "run", "--journal-path", str(journal),
                    str(experiment)],
                   cwd=ROOT, env=experiment_env(state, extra_env), timeout=RUN_TIMEOUT,
                   check=False)  # exit 1 means "deviated" or "failed": the verdict says which
    if not journal.exists():
        raise RuntimeError(f"`chaos run` wrote no journal; see {out_dir / 'chaostoolkit.log'}")
    return write_report(journal, out_dir)


@contextmanager
def sandbox_state(run_dir: Path) -> Iterator[dict]:
    """The running sandbox's state at `run_dir`, or a throwaway sandbox's for the block."""
    state = RunDir(run_dir).read_state()
    if supervisor_alive(state):
        yield {**state, "run_dir": str(run_dir)}
        return
    print(f"no sandbox runs at {run_dir}: starting one for this run", flush=True)
    with tempfile.TemporaryDirectory(prefix="microlab-chaos-") as scratch:
        sandbox = SandboxProcess(Path(scratch) / "run")
        try:
            sandbox.start()
            yield {**sandbox.state, "run_dir": str(sandbox.run_dir.path)}
        finally:
            sandbox.stop()
            amqp_url = sandbox.env.get("AMQP_URL", DEFAULT_AMQP_URL)
            delete_namespace(sandbox.state.get("amqp_url", amqp_url), sandbox.namespace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=experiment_names())
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get(
        "MICROLAB_RUN_DIR", ROOT / ".microlab")).resolve())
    parser.add_argument("--out", type=Path, help="default: reports/chaos/<experiment>/")
    args = parser.parse_args(argv)
    out_dir = args.out or REPORTS / args.experiment
    with sandbox_state(args.run_dir) as state:
        verdict = run_experiment(args.experiment, state, out_dir)
    print(f"\n{'PASSED' if verdict.passed else 'FAILED'}: {verdict.title}\n"
          f"report: {out_dir / 'report.md'}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
