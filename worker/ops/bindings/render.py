"""Write an import as a commented sendpipe config (TOML) and its report (a table, or JSON)."""

from __future__ import annotations

import re
import textwrap
import unicodedata
from typing import Any

from worker.ops.bindings.mapping import Imported, Outcome

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PORT_KEYS = ("host", "pipeline", "encryption_thumbprint", "delivery_key", "retry_count", "retry_interval_s")


def _str(value: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in value:
        if ch in {'"', "\\"}:
            out.append("\\" + ch)
        elif unicodedata.category(ch) in {"Cc", "Cf"}:
            out.append(f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _str(name)


def _val(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return _str(str(value))


def _clean(text: str) -> str:
    # Comments hold BizTalk names: no control or invisible characters in them (TOML forbids the former).
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text if unicodedata.category(c) != "Cf")


def _comment(text: str, lead: str = "# ", indent: str = "#   ") -> list[str]:
    return textwrap.wrap(_clean(text), 116, initial_indent=lead, subsequent_indent=indent, break_on_hyphens=False)


def _origin(o: Outcome) -> str:
    return f'BizTalk send port "{o.biztalk}" (application {o.application}, pipeline {o.biztalk_pipeline})'


def _pipeline_lines(name: str, stage: tuple[dict[str, object], ...]) -> list[str]:
    if not stage:
        return [f"[pipelines.{_key(name)}]", "# no component: the payload is delivered as published (PassThruTransmit)"]
    lines = []
    for comp in stage:
        lines.append(f"[[pipelines.{_key(name)}.encode]]")
        lines.extend(f"{k} = {_val(v)}" for k, v in comp.items())
    return lines


def _port_lines(o: Outcome) -> list[str]:
    table = {**(o.port or {}), "pipeline": o.pipeline}
    return [f"[send_ports.{_key(o.name)}]", *(f"{k} = {_val(table[k])}" for k in _PORT_KEYS if k in table)]


def render_config(imp: Imported, source: str) -> str:
    """The config text: [group], the shared pipelines, the mapped ports, then the others commented out."""
    lines = [
        f"# sendpipe config imported from the BizTalk binding file {_clean(source)} by `sendpipe import-bindings`.",
        '# Mapping rules: README "Migrating from BizTalk". Read each note, then run `sendpipe check` per host.',
        "",
        "[group]",
        "# The BizTalk group's name is not in binding files: rename freely.",
        f"name = {_str(imp.group_name)}",
    ]
    if imp.placeholder:
        lines += [
            "# PLACEHOLDER — REPLACE: the group signing certificate is a BizTalk group setting, not in binding files.",
            "# No certificate has this thumbprint: `sendpipe check` and `sendpipe run` reject it until it is replaced.",
        ]
    lines += [f"signing_thumbprint = {_str(imp.signing_thumbprint)}", ""]
    mapped = [o for o in imp.outcomes if o.mapped]
    if not imp.pipelines:
        lines += ["[pipelines]", ""]
    for name, stage in imp.pipelines.items():
        users = [o for o in mapped if o.pipeline == name]
        origins = sorted({o.biztalk_pipeline for o in users})
        lines += _comment(f"Used by {', '.join(o.name for o in users)} (BizTalk pipeline {', '.join(origins)}).")
        lines += [*_pipeline_lines(name, stage), ""]
    if not mapped:
        lines += ["[send_ports]", ""]
    for o in mapped:
        lines += _comment(_origin(o))
        for note in o.notes:
            lines += _comment(note, "#   note: ", "#     ")
        lines += [*_port_lines(o), ""]
    drafted = set(imp.pipelines)
    others = [o for o in imp.outcomes if not o.mapped]
    if others:
        lines += ["# ---- Not mapped: commented out, each with the reason. ----", ""]
    for o in others:
        lines += _comment(_origin(o))
        for reason in o.reasons:
            lines += _comment(reason, "#   NOT MAPPED: ", "#     ")
        for note in o.notes:
            lines += _comment(note, "#   note: ", "#     ")
        if o.components is not None and o.port is not None:
            if o.pipeline not in drafted:
                drafted.add(o.pipeline)
                lines += ["# " + line for line in _pipeline_lines(o.pipeline, o.components)]
            lines += ["# " + line for line in _port_lines(o)]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def report_json(imp: Imported, source: str, output: str) -> dict[str, Any]:
    mapped = sum(o.mapped for o in imp.outcomes)
    return {
        "source": source,
        "output": output,
        "exit_code": imp.exit_code,
        "send_ports": len(imp.outcomes),
        "mapped": mapped,
        "not_mapped": len(imp.outcomes) - mapped,
        "group": {"name": imp.group_name, "signing_thumbprint": imp.signing_thumbprint, "placeholder": imp.placeholder},
        "pipelines": sorted(imp.pipelines),
        "warnings": imp.warnings,
        "ports": [
            {
                "biztalk_port": o.biztalk,
                "application": o.application,
                "biztalk_pipeline": o.biztalk_pipeline,
                "status": "mapped" if o.mapped else "not-mapped",
                "sendpipe_port": o.name,
                "host": (o.port or {}).get("host"),
                "pipeline": o.pipeline or None,
                "delivery_key": o.delivery_key,
                "encryption_thumbprint": (o.port or {}).get("encryption_thumbprint"),
                "reasons": o.reasons,
                "notes": o.notes,
            }
            for o in imp.outcomes
        ],
    }


def report_text(imp: Imported, source: str, output: str) -> str:
    data = report_json(imp, source, output)
    head = ["result", "BizTalk send port", "sendpipe port", "host", "pipeline"]
    rows = [
        [
            "MAPPED" if p["status"] == "mapped" else "NOT MAPPED",
            p["biztalk_port"],
            p["sendpipe_port"],
            p["host"] or "-",
            p["pipeline"] or "-",
        ]
        for p in data["ports"]
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        f"{source}: {data['send_ports']} send ports, {data['mapped']} mapped, {data['not_mapped']} not mapped"
        f" -> {output}"
    ]
    for row in [head, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for p in data["ports"]:
        for reason in p["reasons"]:
            lines += _comment(f"{p['biztalk_port']}: NOT MAPPED: {reason}", "", "    ")
        for note in p["notes"]:
            lines += _comment(f"{p['biztalk_port']}: {note}", "", "    ")
    for warning in imp.warnings:
        lines += _comment(warning, "warning: ", "    ")
    return "\n".join(lines) + "\n"
