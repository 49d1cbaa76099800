"""The partner-side openssl checks live in worker.partner (the demo uses them too)."""

from worker.demo.partner import Unwrapped, split_entity, unwrap

__all__ = ["Unwrapped", "split_entity", "unwrap"]
