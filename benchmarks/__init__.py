"""toolvisor's performance suite: call latency against its peers, throughput, frame sizes,
spawn, restart, start/shutdown, memory, and resource accounting.

Run it from the repository root with ``python -m benchmarks`` (``make bench``;
``--quick`` for a short run, ``--out PATH`` for the JSON file, ``--long`` for the
10-minute accountant memory run). A benchmark measures and reports; it never
fails on a slow figure. See ``docs/benchmarks.md``.
"""
