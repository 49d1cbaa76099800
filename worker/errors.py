"""Every failure sendpipe knows, each with a stable code for logs and whether a retry can help.

    SendpipeError                       code, transient, stage
    ├── ConfigError                     permanent: the config or settings are wrong (fix, reload)
    │   └── AlgorithmNotSupported       permanent: a legacy or unavailable algorithm was asked for
    ├── StoreError                      permanent: the certificate store cannot be used as laid out
    ├── CertificateError                permanent: a certificate is missing, unusable or revoked
    ├── MessageError                    permanent: the message itself cannot be processed
    └── TransientError                  transient: the world may heal (broker, timeouts); retried
        ├── BrokerUnavailable           the connection or channel is gone: nothing can be settled on it
        └── DeliveryFailed              the broker nacked, returned or did not confirm one publish

Permanent errors suspend the message (``sendpipe.suspended.<host>``); transient errors are retried
at the send port's interval, at most ``retry_count`` times, then suspended as ``retries-exhausted``.
``BrokerUnavailable`` is the exception: it is not an outcome of the message — the session is over,
the broker redelivers what was not acked. Only ``worker/broker.py`` raises it, mapping the broker
library's own exceptions (the rest of the code never names aiormq or aio-pika types).
Messages carry no secrets: they name files, thumbprints and fields, never key material or payloads.
"""

from __future__ import annotations


class SendpipeError(Exception):
    """Base of all sendpipe errors: ``code`` is stable kebab-case, ``transient`` says if a retry helps."""

    code: str = "internal-error"
    transient: bool = False

    def __init__(self, message: str, *, code: str | None = None, stage: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.stage = stage

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(SendpipeError):
    """The config file or the settings are invalid; raised at load, before any message is touched."""

    code = "config-invalid"


class AlgorithmNotSupported(ConfigError):
    """An algorithm that is refused (DES, 3DES, RC2, SHA-1, MD5) or not available here (AES-192)."""

    code = "algorithm-not-supported"


class StoreError(SendpipeError):
    """The service account's store is unusable: bad account name, loose key file, unreadable file."""

    code = "store-invalid"


class CertificateError(SendpipeError):
    """A certificate the pipeline needs is missing, unusable for its role, expired or revoked.

    Codes are role-prefixed where the role matters to an operator, e.g. ``signing-cert-not-found``,
    ``encryption-cert-expired``; revocation codes are shared (``cert-revoked``).
    """

    code = "cert-invalid"


class MessageError(SendpipeError):
    """The message cannot be processed as sent: unknown send port, bad override header, too large."""

    code = "message-invalid"


class TransientError(SendpipeError):
    """A failure that may heal on its own: broker unavailable, publish not confirmed in time."""

    code = "transient-failure"
    transient = True


class BrokerUnavailable(TransientError):
    """The connection or a channel failed (refused, reset, closed by the broker, consumer cancelled)."""

    code = "broker-unavailable"


class DeliveryFailed(TransientError):
    """The protected message was not confirmed by the broker, or was returned as unroutable."""

    code = "delivery-failed"
