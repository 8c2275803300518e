"""docs/errors.md: every row's bad input still produces exactly the message the row shows (issue 16, Deliver 2)."""

from __future__ import annotations

import re
from pathlib import Path

import error_cases_nodes  # noqa: F401 (registers the other nodes' cases)
import pytest
from error_cases import CASES, Ctx
from helpers import comfy_folders

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
_ROW = re.compile(r"^\| `(?P<id>[a-z0-9_]+)` \| (?P<input>.+?) \| (?P<bad>.+?) \| (?P<message>.+) \|$")


def _rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            assert m["id"] not in rows, f"row {m['id']} appears twice"
            rows[m["id"]] = m["message"].replace("\\|", "|")
    return rows


ROWS = _rows()


def _pattern(message: str) -> re.Pattern:
    """The documented message as a full-match pattern; '…' stands for any text."""
    return re.compile(".*?".join(re.escape(part) for part in message.split("…")), re.DOTALL)


def test_every_case_has_a_row_and_every_row_a_case() -> None:
    assert len(ROWS) >= 70
    assert sorted(ROWS) == sorted(CASES)


@pytest.fixture(scope="module")
def model():
    from cxr_pack.cxr_core.random_models import build_tiny_model_patcher

    return build_tiny_model_patcher(model_channels=32, seed=0)


@pytest.fixture(scope="module")
def text_encoder():
    from tiny_clip import build_tiny_clip

    return build_tiny_clip(seed=0)


@pytest.mark.parametrize("case_id", sorted(ROWS))
def test_row_still_produces_its_message(
    case_id: str, tmp_path: Path, model, sd1_tokenizer, text_encoder, monkeypatch
) -> None:
    monkeypatch.delenv("CXR_MAX_PIXELS", raising=False)
    inp, out = tmp_path / "input", tmp_path / "output"
    with comfy_folders(input=inp, output=out), pytest.raises(ValueError) as err:
        CASES[case_id](Ctx(inp, out, model, sd1_tokenizer, text_encoder))
    assert _pattern(ROWS[case_id]).fullmatch(str(err.value)), f"\ndoc:  {ROWS[case_id]}\nnow:  {err.value}"
    assert str(tmp_path) not in str(err.value), "messages must not show the server's folders"
