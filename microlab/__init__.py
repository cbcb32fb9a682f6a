"""The sandbox runtime: topology, supervisor, CLI, embedded MongoDB, chaos proxy, checker."""
