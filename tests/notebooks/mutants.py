"""Break the pattern a notebook teaches and see the notebook fail.

A notebook that still passes with its pattern broken demonstrates nothing. Each mutant below is
one small edit of the project's own code (a breaker that never opens, retries with no backoff,
a saga that compensates nothing). `run_mutant` copies the project to a temporary folder, applies
the edit there (the working tree is never touched) and runs that copy's notebook runner on the
notebook, which must then fail.

    python -m tests.notebooks.mutants               # every mutant
    python -m tests.notebooks.mutants breaker-never-opens
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("microlab", "patterns", "services", "notebooks")


@dataclass(frozen=True)
class Mutant:
    name: str
    notebook: str  # its number
    file: str  # relative to the project
    original: str  # must occur exactly once in the file
    mutated: str


MUTANTS: tuple[Mutant, ...] = (
    Mutant("retry-no-backoff", "03", "patterns/retry.py",
           "return rng.uniform(0, min(max_delay, base_delay * 2**retry_number))", "return 0.0"),
    Mutant("retry-budget-never-refuses", "03", "patterns/retry.py",
           "if len(self._retries) >= allowance:", "if False:"),
    Mutant("failed-message-acked", "04", "patterns/bus.py",
           'return "retry", described, None',
           'return "ack", None, None  # mutant: a failed message is acked and forgotten'),
    Mutant("saga-compensates-nothing", "05", "patterns/saga.py",
           'step.compensation(self._context(record, step.name, suffix=":undo"))',
           "pass  # mutant: the compensation is skipped"),
    Mutant("breaker-never-opens", "07", "patterns/breaker.py",
           "if self._should_open_locked():", "if False and self._should_open_locked():"),
    Mutant("balancer-never-ejects", "06", "patterns/discovery.py",
           "                self.report_failure(base_url)\n", ""),
    Mutant("relay-drops-trace-context", "08", "patterns/outbox.py",
           'span_from_message(event["headers"], f"relay', 'span_from_message({}, f"relay'),
    Mutant("saga-never-releases-stock", "10", "services/orders/order_saga.py",
           "        self.peers.release_reservation(reservation_id, key=context.idempotency_key)",
           "        pass  # mutant: the compensation forgets to release the stock"),
)


def mutant_copy(mutant: Mutant, where: Path) -> Path:
    """A copy of the project with the mutant's edit applied."""
    for folder in COPIED:
        shutil.copytree(ROOT / folder, where / folder,
                        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    target = where / mutant.file
    text = target.read_text()
    if text.count(mutant.original) != 1:
        raise AssertionError(f"{mutant.name}: the text to mutate occurs "
                             f"{text.count(mutant.original)} times in {mutant.file}")
    target.write_text(text.replace(mutant.original, mutant.mutated))
    return where


def run_mutant(mutant: Mutant, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the mutant's notebook in a mutated copy; returns the runner's result."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as folder:
        copy = mutant_copy(mutant, Path(folder))
        return subprocess.run([sys.executable, "-m", "microlab.notebooks", mutant.notebook,
                               "--out", str(copy / "reports")],
                              cwd=copy, capture_output=True, text=True, timeout=timeout)


def main(argv: list[str]) -> int:
    chosen = [mutant for mutant in MUTANTS if not argv or mutant.name in argv]
    survived = 0
    for mutant in chosen:
        done = run_mutant(mutant)
        verdicts = [line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
        killed = done.returncode == 1 and any(line.startswith("FAIL") for line in verdicts)
        survived += not killed
        print(f"{'killed  ' if killed else 'SURVIVED'} {mutant.name} (notebook {mutant.notebook})")
        for line in verdicts or done.stdout.splitlines()[-5:] + done.stderr.splitlines()[-5:]:
            print(f"    {line}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
