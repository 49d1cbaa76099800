"""`sendpipe import-bindings`: convert a BizTalk binding file's send ports into a sendpipe config (issue 15)."""

from worker.ops.bindings.command import register

__all__ = ["register"]
