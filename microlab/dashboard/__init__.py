"""The control room: a live web page of the running sandbox, to watch it and break it with a click.

`python -m microlab.dashboard` (or `make dashboard`) serves one page on 127.0.0.1:8488 that shows
the topology as a graph (services coloured by health, edges by state, with their recent rate,
error rate and p95), every circuit breaker and its transitions as they happen, recent sagas, the
demo customer's live notifications (Socket.IO), the latest trace as a waterfall, and buttons to
slow, cut and restore an edge, place a few orders and check the invariants.

It is a client of the sandbox (see sandbox.py): it talks only to the sandbox's own APIs, so it
can be started and stopped on its own, and a page left open follows the sandbox across restarts.
The page is plain JavaScript with no build step; its one dependency, the Socket.IO client, comes
from npm at build time (`make dashboard`) and is served from here, so it works offline.
"""
