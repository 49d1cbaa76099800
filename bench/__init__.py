"""Benchmarks: scripts, not tests (CI asserts no timings). See docs/performance.md.

.venv/bin/python -m bench.pipeline [--quick]   the encoder in-process vs the bare-primitives floor
.venv/bin/python -m bench.e2e [--quick]        real workers through the local RabbitMQ, and peak RSS
"""
