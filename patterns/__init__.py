"""The lesson's patterns, once, for every service to import and every notebook to show.

Each module opens with the failure it protects against and the knobs it has. Modules import
nothing from `services/` or `microlab/`: a service runs without the sandbox runtime.
"""
