"""The Bouncy Castle receiver (tests/interop/BcReceiver.java): compiled once, one JVM for the whole session.

Debian's bcprov/bcpkix/bcutil/bcmail 1.72 with javax.mail 1.6 and JavaBeans Activation, as
scripts/interop-receivers.sh installs them; requests go over the JVM's stdin, one line each, so a case
costs a few milliseconds instead of a JVM start.
"""

from __future__ import annotations

import dataclasses
import select
import subprocess
from pathlib import Path

JARS = ("bcprov", "bcpkix", "bcutil", "bcmail", "javax.mail", "javax.activation")
SOURCE = Path(__file__).with_name("BcReceiver.java")
_ANSWER_S = 60


@dataclasses.dataclass(frozen=True)
class Received:
    ok: bool
    layers: tuple[str, ...]
    signer: str | None  # SHA-1 thumbprint of the verified signer
    recipient_index: int | None  # the RecipientInfo opened, by position
    payload: bytes
    error: str


class BcReceiver:
    def __init__(self, work: Path) -> None:
        classpath = ":".join(str(Path("/usr/share/java") / f"{jar}.jar") for jar in JARS)
        classes = work / "classes"
        subprocess.run(
            ["javac", "-nowarn", "-d", str(classes), "-cp", classpath, str(SOURCE)],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        self._work = work
        self._count = 0
        self._proc = subprocess.Popen(
            ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", f"{classes}:{classpath}", "BcReceiver"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        ready = self._line()
        assert ready.startswith("READY"), ready
        self.version = ready.split(" ", 1)[1]

    def _line(self) -> str:
        assert self._proc.stdout is not None
        readable, _, _ = select.select([self._proc.stdout], [], [], _ANSWER_S)
        assert readable, "the Bouncy Castle receiver did not answer"
        line = self._proc.stdout.readline().decode()
        assert line, f"the Bouncy Castle receiver exited ({self._proc.poll()})"
        return line.rstrip("\n")

    def receive(
        self,
        entity: bytes,
        *,
        trust: Path,
        recipients: tuple[tuple[Path, Path], ...] = (),
        signer: Path | None = None,
    ) -> Received:
        """Hand ``entity`` to Bouncy Castle with the recipients' (cert, key) files and the trusted root."""
        self._count += 1
        src, out = self._work / f"in-{self._count}.eml", self._work / f"out-{self._count}.bin"
        src.write_bytes(entity)
        fields = {"in": src, "out": out, "trust": trust}
        request = [f"{k}={v}" for k, v in fields.items()]
        if recipients:
            request.append("certs=" + ",".join(str(c) for c, _ in recipients))
            request.append("keys=" + ",".join(str(k) for _, k in recipients))
        if signer is not None:
            request.append(f"signer={signer}")
        assert self._proc.stdin is not None
        self._proc.stdin.write(("\t".join(request) + "\n").encode())
        self._proc.stdin.flush()
        status, *rest = self._line().split("\t")
        payload = out.read_bytes() if out.exists() else b""
        src.unlink()
        out.unlink(missing_ok=True)
        if status != "OK":
            return Received(False, (), None, None, b"", rest[0] if rest else status)
        layers, thumbprint, used = rest
        return Received(
            True,
            tuple(layers.split(">")) if layers else (),
            None if thumbprint == "-" else thumbprint,
            None if used == "-" else int(used),
            payload,
            "",
        )

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
