"""Chaos experiments against the sandbox, for the Chaos Toolkit (`chaos run chaos/X.json`).

- `probes`: the Python probes and actions the experiments call (a small load of orders through
  the gateway, the invariant checker, health).
- `runner`: runs one experiment against a sandbox (started for the run if none is up) and
  keeps its journal under `reports/chaos/<name>/`.
- `report`: turns a journal into a verdict, in Markdown, with a plot of the orders.
"""
