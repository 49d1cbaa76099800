"""Operator work on top of a host: suspended messages, importing BizTalk bindings."""
