"""Whole-sandbox tests. Their `sandbox` fixture (up once per session, on free ports) is in
tests/conftest.py, shared with the browser tests (tests/browser) so a full run starts one."""
