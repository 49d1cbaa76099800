"""GnuPG's S/MIME tool (gpgsm 2.2.40 on Debian 12) as a receiver, in an isolated GNUPGHOME.

gpgsm reads CMS, not MIME: the tests take the pkcs7-mime body (base64) or the parts of multipart/signed
out of the entity and hand gpgsm the DER; the root CA is trusted through trustlist.txt, CRL checks are
off (offline, as the other receivers' are). Private keys come in as PKCS#12 with the PBES1 3DES/SHA-1
protection gpgsm 2.2 reads (it cannot parse PBES2/AES, cryptography's default).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from pki import Issued

_PASSPHRASE = b"gpgsm-test"


class Gpgsm:
    def __init__(self, home: Path, ca: Issued) -> None:
        home.mkdir(mode=0o700, parents=True)
        (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
        (home / "gpgsm.conf").write_text("disable-crl-checks\ndisable-dirmngr\n")
        self.home = home
        assert self.import_cert(ca).returncode == 0
        # The root is trusted for S/MIME (flag S), as a partner's trust store holds it.
        fingerprint = ca.thumbprint
        (home / "trustlist.txt").write_text(f"{fingerprint} S\n")

    def close(self) -> None:
        """Stop the gpg-agent this home started (each GNUPGHOME gets its own, which outlives gpgsm)."""
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, timeout=30, check=False)

    def run(self, *args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        argv = ["gpgsm", "--batch", "--status-fd", "1", "--pinentry-mode", "loopback", "--passphrase-fd", "0"]
        env = {**os.environ, "GNUPGHOME": str(self.home)}
        return subprocess.run(
            [*argv, *map(str, args)], input=stdin or _PASSPHRASE + b"\n", capture_output=True, env=env,
            timeout=60, check=False,
        )  # fmt: skip

    def import_cert(self, issued: Issued) -> subprocess.CompletedProcess[bytes]:
        der = self.home / f"{issued.thumbprint}.der"
        der.write_bytes(issued.cert_der())
        return self.run("--import", der)

    def import_key(self, issued: Issued) -> subprocess.CompletedProcess[bytes]:
        # gpgsm 2.2.40 fails to read about 1 in 60 of these files ("decryption failed; trying charset ...",
        # "possibly bad passphrase given"), depending on the random salt: measured 1 of 60 imports of the
        # same key, each with a fresh salt. The file is the test's, not sendpipe's output, so a refused
        # import is retried with a fresh salt (up to 4 files; 4 in a row would be 1 in ~10^7).
        done = None
        for _ in range(4):
            protection = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(2048)
                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1())  # noqa: S303 - the PKCS#12 MAC gpgsm 2.2 reads; test keys only
                .build(_PASSPHRASE)
            )
            p12 = self.home / f"{issued.thumbprint}.p12"
            p12.write_bytes(pkcs12.serialize_key_and_certificates(b"key", issued.key, issued.cert, None, protection))
            done = self.run("--import", p12)
            if done.returncode == 0 or b"possibly bad passphrase" not in done.stderr:
                return done
        assert done is not None
        return done

    def decrypt(self, der: bytes) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
        src, out = self.home / "in.p7m", self.home / "out.bin"
        src.write_bytes(der)
        out.unlink(missing_ok=True)
        done = self.run("--decrypt", "--output", out, src)
        return done, out.read_bytes() if out.exists() else b""

    def verify(
        self, der: bytes, detached_content: bytes | None = None
    ) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
        """Verify an opaque signed-data (content written out) or a detached signature over ``detached_content``."""
        sig, out = self.home / "sig.p7s", self.home / "content.bin"
        sig.write_bytes(der)
        out.unlink(missing_ok=True)
        if detached_content is None:
            return self.run("--verify", "--output", out, sig), out.read_bytes() if out.exists() else b""
        part = self.home / "part.bin"
        part.write_bytes(detached_content)
        return self.run("--verify", sig, part), detached_content


def status(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    """gpgsm's machine-readable status lines (``--status-fd``), without the ``[GNUPG:]`` prefix."""
    lines = done.stdout.decode(errors="replace").splitlines()
    return [line.removeprefix("[GNUPG:] ") for line in lines if line.startswith("[GNUPG:] ")]


def valid_signer(done: subprocess.CompletedProcess[bytes]) -> str | None:
    """The SHA-1 fingerprint of a good, valid, fully trusted signature (VALIDSIG + TRUST_FULLY), else None."""
    lines = status(done)
    valid = [line.split()[1] for line in lines if line.startswith("VALIDSIG ")]
    trusted = any(line.startswith("TRUST_FULLY") for line in lines)
    if done.returncode != 0 or len(valid) != 1 or not trusted or any(line.startswith("BADSIG") for line in lines):
        return None
    return valid[0]
