"""`make bench` (python -m tests.bench): the whole stack on this machine, measured; see docs/performance.md."""
