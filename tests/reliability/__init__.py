"""Reliability, hostile-input and security checks of sendpipe against the real broker (issue #5).

``harness`` is also a command: ``.venv/bin/python -m tests.reliability.harness [--long] [--scenario NAME]``.
"""
