"""Load scenarios (Locust, headless): `python -m loadtests.run breaker|retries|saga [--short]`."""
