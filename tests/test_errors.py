"""The stable error codes: one enum (worker/errors.py), README's table in step with it, no free strings."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from worker.errors import SUSPENSION_CODES, Code, SendpipeError

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_codes() -> set[str]:
    text = README.read_text(encoding="utf-8")
    paragraph = text.split("**Error codes**", 1)[1].split("\n\n", 1)[0]
    found: set[str] = set()
    for token in re.findall(r"`([^`]+)`", paragraph):
        if token == "sendpipe-error-code" or " " in token or token.isupper():  # header, a command, a constant
            continue
        # `{signing,encryption}-cert-expired` stands for both: odd pieces of the split are the alternatives
        pieces = re.split(r"\{([^}]*)\}", token)
        parts = [piece.split(",") if i % 2 else [piece] for i, piece in enumerate(pieces)]
        found.update("".join(combo) for combo in itertools.product(*parts))
    return found


def test_readmes_error_code_table_is_the_enums_suspension_codes() -> None:
    assert _readme_codes() == {str(c) for c in SUSPENSION_CODES}


def test_codes_are_kebab_case_and_unique() -> None:
    values = [c.value for c in Code]
    assert len(values) == len(set(values))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", v) for v in values)


def test_an_unknown_code_is_refused_where_it_is_raised() -> None:
    with pytest.raises(ValueError, match="not-a-code"):
        SendpipeError("x", code="not-a-code")  # type: ignore[arg-type]  # what a typo would do
    assert SendpipeError("x", code=Code.USAGE).code is Code.USAGE
