"""The `import-bindings` subcommand: read, map, validate with sendpipe's own loader, write, report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from worker.errors import Code, ConfigError, InternalError, UsageError
from worker.identity.certs import normalize_thumbprint
from worker.ops.bindings.mapping import Options, import_ports
from worker.ops.bindings.parse import BindingsError, read_bindings
from worker.ops.bindings.render import render_config, report_json, report_text
from worker.pipeline.catalogue import load_config

_DESCRIPTION = (
    "Convert a BizTalk binding file's send ports (MIME/SMIME encoder settings, EncryptionCert, retries, send "
    "handler host) into a sendpipe config, validated by sendpipe's loader before it is written; exit 0 when "
    "every send port was mapped, 2 when some were not (they are written commented out, with the reason), 1 "
    "when none was."
)


def register(sub: Any) -> None:
    """Add `import-bindings` to the `sendpipe` parser."""
    imp = sub.add_parser(
        "import-bindings",
        help="Convert a BizTalk binding file's send ports into a sendpipe config.",
        description=_DESCRIPTION,
    )
    imp.add_argument("bindings", type=Path, metavar="BINDINGS.xml", help="binding file (BizTalk export)")
    imp.add_argument("-o", "--output", type=Path, metavar="OUT.toml", help="config to write (default: stdout)")
    imp.add_argument(
        "--host-map",
        action="append",
        default=[],
        metavar="BTS=HOST",
        help="rename a BizTalk host (send handler) to a sendpipe host; repeatable",
    )
    imp.add_argument("--signing-thumbprint", metavar="T", help="the group signing certificate's thumbprint")
    imp.add_argument("--json", action="store_true", help="report as JSON")
    imp.add_argument(
        "--upgrade-ciphers", action="store_true", help="map DES, DES3 and RC2 ports to AES256 (with a warning)"
    )
    imp.set_defaults(func=cmd_import_bindings)


def _host_map(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        bts, sep, host = item.partition("=")
        if not sep or not bts.strip() or not host.strip():
            raise UsageError(
                f"--host-map {item!r}: expected BTS=HOST (a BizTalk host name = a sendpipe host)", code=Code.USAGE
            )
        out[bts.strip()] = host.strip()
    return out


def cmd_import_bindings(args: argparse.Namespace) -> int:
    source: Path = args.bindings
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise BindingsError(f"{source}: binding file not found", code=Code.BINDINGS_NOT_FOUND) from None
    except OSError as exc:
        raise BindingsError(f"{source}: cannot read ({type(exc).__name__})") from None
    thumbprint = normalize_thumbprint(args.signing_thumbprint) if args.signing_thumbprint else None
    opts = Options(
        host_map=_host_map(args.host_map), upgrade_ciphers=args.upgrade_ciphers, signing_thumbprint=thumbprint
    )
    imported = import_ports(read_bindings(data, str(source)), opts)
    text = render_config(imported, source.name)
    output = str(args.output) if args.output else "stdout"
    _write(text, args.output, {o.name for o in imported.outcomes if o.mapped})
    report = sys.stdout if args.output else sys.stderr
    if args.json:
        json.dump(report_json(imported, str(source), output), report, indent=2)
        print(file=report)
    else:
        report.write(report_text(imported, str(source), output))
    report.flush()
    if imported.exit_code == 1:
        print(
            f"sendpipe: error [bindings-nothing-mapped]: none of the {len(imported.outcomes)} send ports of "
            f"{source} could be mapped (reasons above)",
            file=sys.stderr,
        )
    return imported.exit_code


def _write(text: str, target: Path | None, mapped: set[str]) -> None:
    """Validate with `load_config` (the loader `sendpipe run` uses) from a temporary file, then put it in place."""
    folder = target.resolve().parent if target else Path(tempfile.gettempdir())
    try:
        fd, tmp = tempfile.mkstemp(prefix=".import-", suffix=".toml", dir=folder)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write there ({type(exc).__name__})", code=Code.OUTPUT_UNWRITABLE) from None
    path = Path(tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            config = load_config(path)
        except ConfigError as exc:  # a bug of the importer, never the binding file's fault
            raise InternalError(f"the imported config does not load: {exc.message}", code=Code.INTERNAL_ERROR) from None
        if set(config.send_ports) != mapped:
            raise InternalError("the imported config does not hold the mapped ports", code=Code.INTERNAL_ERROR)
        if target is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            path.chmod(0o644)
            os.replace(path, target)
    finally:
        path.unlink(missing_ok=True)
