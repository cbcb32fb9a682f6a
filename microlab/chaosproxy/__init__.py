"""A Toxiproxy-compatible chaos proxy, for running the sandbox without Docker.

It speaks Toxiproxy's HTTP API (port 8474) closely enough that `toxiproxy-python`, the Chaos
Toolkit extension and plain `requests` cannot tell it from the real server, and it proxies TCP
connections through the same toxics (latency, bandwidth, slow_close, timeout, reset_peer,
slicer, limit_data). In compose mode the real `ghcr.io/shopify/toxiproxy` image takes its place.
See docs/chaos-proxy.md for how it maps to the real server and where it deliberately differs.

    python -m microlab.chaosproxy -port 8474          # as a program
    with ChaosProxyServer(port=0) as chaos: ...       # inside a test or notebook
"""

from .api import VERSION
from .server import ChaosApp, ChaosProxyServer

__all__ = ["VERSION", "ChaosApp", "ChaosProxyServer"]
