"""Every failure sendpipe knows, each with a stable code for logs and whether a retry can help.

    SendpipeError                       code (a Code), transient, stage
    ├── UsageError                      permanent: the command line is wrong (a CLI error, exit 1)
    ├── InternalError                   permanent: a bug; the message is suspended, the instance runs on
    ├── ConfigError                     permanent: the config or settings are wrong (fix, reload)
    │   └── AlgorithmNotSupported       permanent: a legacy or unavailable algorithm was asked for
    ├── StoreError                      permanent: the certificate store cannot be used as laid out
    ├── CertificateError                permanent: a certificate is missing, unusable or revoked
    ├── MessageError                    permanent: the message itself cannot be processed
    │   └── RetriesExhausted            permanent: transient failures outlasted the port's retry_count
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

import enum
import os


class Code(enum.StrEnum):
    """Every stable error code (kebab-case, SPEC): logs, ``sendpipe-error-code`` headers, CLI errors.

    README's error-code table lists the ones a suspended message can carry; tests/test_errors.py keeps
    the two in step. A code is never renamed: operators alert and auto-resume on them.
    """

    ALGORITHM_NOT_SUPPORTED = "algorithm-not-supported"
    BINDINGS_INVALID = "bindings-invalid"
    BINDINGS_MALFORMED = "bindings-malformed"
    BINDINGS_NOT_FOUND = "bindings-not-found"
    BINDINGS_NOTHING_MAPPED = "bindings-nothing-mapped"
    BINDINGS_UNSAFE_XML = "bindings-unsafe-xml"
    BROKER_UNAVAILABLE = "broker-unavailable"
    CERT_EXPIRES_SOON = "cert-expires-soon"
    CERT_INVALID = "cert-invalid"
    CERT_REVOKED = "cert-revoked"
    CONFIG_INVALID = "config-invalid"
    CONFIG_NOT_FOUND = "config-not-found"
    DELIVERY_FAILED = "delivery-failed"
    DELIVERY_LIMIT_EXCEEDED = "delivery-limit-exceeded"
    DELIVERY_LIMIT_REACHED = "delivery-limit-reached"
    DELIVERY_UNROUTABLE = "delivery-unroutable"
    DEMO_EXISTS = "demo-exists"
    ENCRYPTION_CERT_EXPIRED = "encryption-cert-expired"
    ENCRYPTION_CERT_KEY_USAGE = "encryption-cert-key-usage"
    ENCRYPTION_CERT_NOT_FOUND = "encryption-cert-not-found"
    ENCRYPTION_CERT_NOT_YET_VALID = "encryption-cert-not-yet-valid"
    ENCRYPTION_NOT_APPLIED = "encryption-not-applied"
    FILE_UNREADABLE = "file-unreadable"
    HEADERS_TOO_LARGE = "headers-too-large"
    INTERNAL_ERROR = "internal-error"
    INVALID_CONTENT_TYPE = "invalid-content-type"
    INVALID_SERVICE_ACCOUNT = "invalid-service-account"
    INVALID_THUMBPRINT = "invalid-thumbprint"
    KEY_FILE_INSECURE = "key-file-insecure"
    MESSAGE_INVALID = "message-invalid"
    MESSAGE_TOO_LARGE = "message-too-large"
    NOT_A_RECIPIENT = "not-a-recipient"  # sendpipe verify: not encrypted for the given certificate
    OUTPUT_UNWRITABLE = "output-unwritable"
    PUBLISH_TIMEOUT = "publish-timeout"
    RETRIES_EXHAUSTED = "retries-exhausted"
    REVOCATION_STATUS_UNKNOWN = "revocation-status-unknown"
    SCHEDULED_CERT_NOT_READY = "scheduled-cert-not-ready"
    SETTINGS_INVALID = "settings-invalid"
    SIGNATURE_INVALID = "signature-invalid"  # sendpipe verify: signature or integrity failure
    SIGNING_CERT_EXPIRED = "signing-cert-expired"
    SIGNING_CERT_KEY_USAGE = "signing-cert-key-usage"
    SIGNING_CERT_NO_PRIVATE_KEY = "signing-cert-no-private-key"
    SIGNING_CERT_NOT_FOUND = "signing-cert-not-found"
    SIGNING_CERT_NOT_YET_VALID = "signing-cert-not-yet-valid"
    SIGNING_KEY_MISMATCH = "signing-key-mismatch"
    SIGNER_UNTRUSTED = "signer-untrusted"  # sendpipe verify: chain, validity or key usage of the signer
    STORE_FILE = "store-file"
    STORE_INVALID = "store-invalid"
    STORE_NOT_FOUND = "store-not-found"
    TRANSIENT_FAILURE = "transient-failure"
    UNKNOWN_HOST = "unknown-host"
    UNKNOWN_SEND_PORT = "unknown-send-port"
    USAGE = "usage"


# The codes a suspended message can carry (header ``sendpipe-error-code``): README's table, kept in step.
SUSPENSION_CODES = frozenset({
    Code.SIGNING_CERT_NOT_FOUND, Code.SIGNING_CERT_NO_PRIVATE_KEY, Code.SIGNING_KEY_MISMATCH,
    Code.KEY_FILE_INSECURE, Code.SIGNING_CERT_EXPIRED, Code.ENCRYPTION_CERT_EXPIRED,
    Code.SIGNING_CERT_NOT_YET_VALID, Code.ENCRYPTION_CERT_NOT_YET_VALID, Code.SIGNING_CERT_KEY_USAGE,
    Code.ENCRYPTION_CERT_KEY_USAGE, Code.ENCRYPTION_CERT_NOT_FOUND, Code.CERT_REVOKED,
    Code.REVOCATION_STATUS_UNKNOWN, Code.INVALID_THUMBPRINT, Code.INVALID_CONTENT_TYPE, Code.UNKNOWN_SEND_PORT,
    Code.MESSAGE_TOO_LARGE, Code.HEADERS_TOO_LARGE, Code.ALGORITHM_NOT_SUPPORTED, Code.ENCRYPTION_NOT_APPLIED,
    Code.INTERNAL_ERROR, Code.RETRIES_EXHAUSTED, Code.DELIVERY_UNROUTABLE, Code.PUBLISH_TIMEOUT,
    Code.DELIVERY_FAILED, Code.DELIVERY_LIMIT_REACHED, Code.DELIVERY_LIMIT_EXCEEDED,
})  # fmt: skip


class SendpipeError(Exception):
    """Base of all sendpipe errors: ``code`` is stable kebab-case, ``transient`` says if a retry helps."""

    code: Code = Code.INTERNAL_ERROR
    transient: bool = False

    def __init__(self, message: str, *, code: Code | None = None, stage: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = Code(code)
        self.stage = stage

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class UsageError(SendpipeError):
    """A command was called wrongly (missing ids, an option that needs another)."""

    code = Code.USAGE


class InternalError(SendpipeError):
    """A bug in sendpipe: it suspends one message (``internal-error``) rather than kill the instance."""

    code = Code.INTERNAL_ERROR


class ConfigError(SendpipeError):
    """The config file or the settings are invalid; raised at load, before any message is touched."""

    code = Code.CONFIG_INVALID


class AlgorithmNotSupported(ConfigError):
    """An algorithm that is refused (DES, 3DES, RC2, SHA-1, MD5) or not available here (AES-192)."""

    code = Code.ALGORITHM_NOT_SUPPORTED


class StoreError(SendpipeError):
    """The service account's store is unusable: bad account name, loose key file, unreadable file."""

    code = Code.STORE_INVALID


class CertificateError(SendpipeError):
    """A certificate the pipeline needs is missing, unusable for its role, expired or revoked.

    Codes are role-prefixed where the role matters to an operator, e.g. ``signing-cert-not-found``,
    ``encryption-cert-expired``; revocation codes are shared (``cert-revoked``).
    """

    code = Code.CERT_INVALID


class MessageError(SendpipeError):
    """The message cannot be processed as sent: unknown send port, bad override header, too large."""

    code = Code.MESSAGE_INVALID


class RetriesExhausted(MessageError):
    """A transient failure lasted longer than the send port's retries: suspended with the last reason."""

    code = Code.RETRIES_EXHAUSTED


class TransientError(SendpipeError):
    """A failure that may heal on its own: broker unavailable, publish not confirmed in time."""

    code = Code.TRANSIENT_FAILURE
    transient = True


class BrokerUnavailable(TransientError):
    """The connection or a channel failed (refused, reset, closed by the broker, consumer cancelled)."""

    code = Code.BROKER_UNAVAILABLE


class DeliveryFailed(TransientError):
    """The protected message was not confirmed by the broker, or was returned as unroutable."""

    code = Code.DELIVERY_FAILED


def unreadable(what: str, path: object, exc: OSError) -> str:
    """A sentence for a file this process may not read: which file, why, and as whom (containers run as a uid)."""
    return (
        f"cannot read {what} {path}: {exc.strerror or type(exc).__name__} (this process runs as uid {os.getuid()}, "
        f"gid {os.getgid()}: make it readable by that user, e.g. chown, or run the container as the file's owner)"
    )
