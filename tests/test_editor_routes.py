"""The editor's server routes over HTTP on the real server: prompt tokens and radiograph previews."""

from __future__ import annotations

import io
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

pytestmark = pytest.mark.server

PROMPT = "chest x-ray, PA view, left pleural effusion"


def _post(base_url: str, body: bytes | str, path: str = "/api/cxr_counterfactual/tokens") -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(base_url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(base_url: str, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(base_url + path, timeout=60) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def test_tokens_of_the_prompt_and_positions_of_the_regulated_words(comfy_server, sd1_tokenizer) -> None:
    status, out = _post(
        comfy_server.base_url,
        json.dumps(
            {"text": PROMPT, "pathology_words": "effusion, pneumothorax", "anatomy_words": "left=left_lung"}
        ),
    )
    assert status == 200, out
    assert out["family"] == "sd1" and out["length"] == 77
    texts = [t["text"] for t in out["tokens"]]
    assert texts == ["chest", "x", "-", "ray", ",", "pa", "view", ",", "left", "ple", "ural", "ef", "fusion"]
    assert [t["index"] for t in out["tokens"]] == list(range(1, 14)), (
        "positions in the conditioning (after start)"
    )
    words = {w["word"]: w for w in out["words"]}
    # effusion: two BPE pieces at the prompt's positions 12, 13, the ids the host tokenizer gives them
    assert words["effusion"]["positions"] == [12, 13] and words["effusion"]["status"] == "split"
    ids = [t[0] for t in sd1_tokenizer.tokenize_with_weights(PROMPT)["l"][0]]
    assert [out["tokens"][11]["id"], out["tokens"][12]["id"]] == ids[12:14]
    assert words["left"] == {
        "word": "left",
        "role": "anatomy",
        "token_count": 1,
        "positions": [9],
        "status": "ok",
    }
    assert words["pneumothorax"]["status"] == "missing" and words["pneumothorax"]["positions"] == []
    assert out["missing"] == ["pneumothorax"] and out["split"] == ["effusion"]
    assert out["tokens"][11]["words"] == ["effusion"] and out["tokens"][0]["words"] == []


def test_tokens_for_each_supported_family(comfy_server) -> None:
    """SD1 (CLIP-L), SD2 (OpenCLIP-H) and SDXL (CLIP-L + G) share CLIP's BPE vocabulary; SD2 pads differently."""
    for family in ("sd1", "sd2", "sdxl"):
        body = {"text": "pleural effusion", "pathology_words": "effusion", "family": family}
        status, out = _post(comfy_server.base_url, json.dumps(body))
        assert status == 200, (family, out)
        assert out["family"] == family
        assert [t["text"] for t in out["tokens"]] == ["ple", "ural", "ef", "fusion"], family
        assert out["words"][0]["positions"] == [3, 4], family
    # so the editor's default (sd1) shows what any family's encoder sees, for a long weighted CXR prompt too
    text = "chest x-ray, PA view, left pleural effusion with cardiomegaly, (atelectasis:1.3), no pneumothorax"
    seen = {}
    for family in ("sd1", "sd2", "sdxl"):
        body = {"text": text, "pathology_words": "effusion, atelectasis", "family": family}
        status, out = _post(comfy_server.base_url, json.dumps(body))
        assert status == 200, (family, out)
        seen[family] = ([t["text"] for t in out["tokens"]], [w["positions"] for w in out["words"]])
    assert seen["sd1"] == seen["sd2"] == seen["sdxl"], seen


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ("[1, 2]", "body"),
        (json.dumps({"pathology_words": "effusion"}), "text"),
        (json.dumps({"text": 5}), "text"),
        (json.dumps({"text": "a", "family": "flux"}), "family"),
        (json.dumps({"text": "a", "colour": "red"}), "unknown fields"),
        (json.dumps({"text": "a" * 5000}), "text"),
        (json.dumps({"text": "a", "anatomy_words": "heart"}), "anatomy_words"),
        (
            json.dumps({"text": "a", "pathology_words": ",".join(f"w{i}" for i in range(40))}),
            "at most 32 words",
        ),
    ],
)
def test_bad_token_requests_get_400_naming_the_field(comfy_server, body: str, field: str) -> None:
    status, out = _post(comfy_server.base_url, body)
    assert status == 400, out
    assert field in out["error"], out


def test_oversized_token_request_is_refused_with_413(comfy_server) -> None:
    status, out = _post(comfy_server.base_url, json.dumps({"text": "x" * 40_000}))
    assert status == 413 and "at most" in out["error"]
    status, _ = _post(comfy_server.base_url, json.dumps({"text": "still alive"}))
    assert status == 200, "the server keeps answering after refusing a request"


def test_radiograph_preview_renders_dicom_as_png(comfy_server) -> None:
    from cxr_pack.cxr_core.demo_assets import demo_radiograph_path
    from cxr_pack.cxr_core.radiograph_io import load_radiograph
    from PIL import Image

    shutil.copy(demo_radiograph_path(), comfy_server.input_dir / "preview_test.dcm")
    status, body, ctype = _get(
        comfy_server.base_url, "/api/cxr_counterfactual/radiograph_preview?filename=preview_test.dcm"
    )
    assert status == 200 and ctype == "image/png"
    img = np.asarray(Image.open(io.BytesIO(body)))
    h0, w0 = load_radiograph(comfy_server.input_dir / "preview_test.dcm").size
    assert max(img.shape) == 512 and abs(img.shape[0] / img.shape[1] - h0 / w0) < 0.01
    assert img.std() > 10, "the preview shows the radiograph, not a blank"


@pytest.mark.parametrize(
    ("query", "status"),
    [("filename=../secret.dcm", 400), ("filename=", 400), ("filename=nope.dcm", 404), ("", 400)],
)
def test_radiograph_preview_refuses_bad_names(comfy_server, query: str, status: int) -> None:
    got, body, ctype = _get(comfy_server.base_url, f"/api/cxr_counterfactual/radiograph_preview?{query}")
    assert got == status and ctype.startswith("application/json")
    assert "filename" in json.loads(body)["error"]


def test_radiograph_preview_of_a_file_that_is_not_a_radiograph(comfy_server) -> None:
    (comfy_server.input_dir / "notes.dcm").write_bytes(b"not a dicom at all" * 20)
    got, body, _ = _get(
        comfy_server.base_url, "/api/cxr_counterfactual/radiograph_preview?filename=notes.dcm"
    )
    assert got == 400 and "filename" in json.loads(body)["error"]
