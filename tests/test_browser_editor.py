"""The pack in the real editor: the real ComfyUI server and frontend package, driven by headless Chromium.

Chromium comes from Debian's packages (scripts/setup_host.sh installs it), driven
by Playwright from PyPI; nothing is downloaded at test time. Screenshots are
written to the test's tmp folder and copied to out/browser/ (README's editor
pictures come from there). Checks: the pack loads with no console errors or
404s of its own and registers every node; every template loads with no
missing-node dialog; a DICOM chosen with the node's file chooser uploads and
previews; one queued run of the small full workflow shows the metrics table in
the node with no preview covered by another node; the help pages are served.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CXR_CHROMIUM", "/usr/bin/chromium"))
ARTEFACTS = REPO / "out" / "browser"
PACK_MARKERS = (
    "/extensions/comfyui-cxr-counterfactual",
    "/cxr_counterfactual/",
    "workflow_templates/comfyui-cxr",
)
FULL = "1 Full method (gate, reweight, correction)"

pytestmark = [pytest.mark.server, pytest.mark.checkpoint]

if not CHROMIUM.is_file():
    raise pytest.UsageError(
        f"No Chromium at {CHROMIUM}: run `bash scripts/setup_host.sh` (it installs Debian's chromium) "
        "or set CXR_CHROMIUM to a Chromium executable"
    )


class Editor:
    """One browser page on the server, recording what the pack causes to fail."""

    def __init__(self, page, base_url: str, shots: Path) -> None:
        self.page, self.base_url, self.shots = page, base_url, shots
        self.console: list[str] = []
        self.failed: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text} @ {m.location.get('url', '')}")
                if m.type == "error" else None)  # fmt: skip
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e} {getattr(e, 'stack', '')}"))
        page.on("response", lambda r: self.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("request", lambda r: self.requests.append(r.url))

    def open(self) -> None:
        # a returning user: no first-run template dialog over the canvas
        self.page.request.post(f"{self.base_url}/api/settings/Comfy.TutorialCompleted", data="true")
        self.page.goto(self.base_url)
        self.page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
        self.page.wait_for_timeout(1500)

    def js(self, script: str, arg: object = None) -> object:
        return self.page.evaluate(script, arg)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ARTEFACTS / path.name)
        return path

    def frame(self, x: float, y: float, scale: float) -> None:
        """Show graph point (x, y) near the top-left of the canvas (right of the sidebar, below the menus)."""
        self.js(
            """([x, y, s]) => { app.canvas.ds.scale = s; app.canvas.ds.offset = [90 / s - x, 130 / s - y];
                               app.graph.setDirtyCanvas(true, true); }""",
            [x, y, scale],
        )
        self.page.wait_for_timeout(600)

    def pack_errors(self) -> list[str]:
        return [e for e in self.console + self.failed if any(m in e for m in PACK_MARKERS)]

    def load_template(self, name: str) -> None:
        wf = self.js(
            """async (name) => {
              const r = await fetch(`api/workflow_templates/comfyui-cxr-counterfactual/${encodeURIComponent(name)}.json`);
              return await r.json();
            }""",
            name,
        )
        self.js("async (wf) => { await app.loadGraphData(wf, true, true); }", wf)
        self.page.wait_for_timeout(800)

    def missing_node_dialog(self) -> str | None:
        return self.js(
            """() => {
              const d = [...document.querySelectorAll('.p-dialog')].find(
                (e) => /missing|not found/i.test(e.textContent));
              return d ? d.textContent.slice(0, 300) : null;
            }"""
        )

    def close_dialogs(self) -> None:
        close = self.page.locator(".p-dialog button:has(i.pi-times)")
        while close.count():
            close.first.click()
            self.page.wait_for_timeout(300)


def _write_dicom(path: Path, h: int = 240, w: int = 200) -> None:
    """A small 12-bit MONOCHROME2 chest-like DICOM (two dark lungs, bright mediastinum), made with pydicom."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w), 2600.0)
    for cx in (0.3 * w, 0.7 * w):
        img[((yy - 0.5 * h) / (0.33 * h)) ** 2 + ((xx - cx) / (0.16 * w)) ** 2 < 1] = 700.0
    img += 200 * np.sin(yy / 9.0)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientID = "DX", "PA", "browser-test"
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.clip(img, 0, 4095).astype(np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)


@pytest.fixture(scope="module")
def editor(comfy_server, tmp_path_factory):
    from cxr_pack.cxr_core.demo_assets import demo_label_map_path, demo_legend_path, demo_radiograph_path
    from playwright.sync_api import sync_playwright

    shutil.copy(demo_radiograph_path(), comfy_server.input_dir / "RG1_UNCR.dcm")
    shutil.copy(demo_label_map_path(), comfy_server.input_dir / "RG1_UNCR_labels.png")
    shutil.copy(demo_legend_path(), comfy_server.input_dir / "RG1_UNCR_labels.json")
    shots = tmp_path_factory.mktemp("browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1800, "height": 1100})
        ed = Editor(page, comfy_server.base_url, shots)
        ed.open()
        yield ed
        browser.close()
    assert ed.pack_errors() == [], "console errors or failed requests caused by the pack"


def _pack_nodes(comfy_client) -> list[str]:
    info = comfy_client.object_info()
    return sorted(k for k, v in info.items() if "cxr-counterfactual" in v.get("python_module", ""))


@contextlib.contextmanager
def _nodes_2(editor):
    """The "Nodes 2.0" (Vue) renderer for the block; the classic canvas again afterwards, also on failure."""
    editor.js("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', true); }")
    try:
        yield
    finally:
        editor.js("async () => { await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', false); }")
        editor.page.wait_for_timeout(1500)


def _new_image_loader(editor) -> None:
    """An empty graph with one CXR Image Loader at (100, 100)."""
    editor.js("() => { app.graph.clear(); }")
    editor.js(
        "() => { const n = LiteGraph.createNode('CXRImageLoader'); n.pos = [100, 100]; app.graph.add(n); }"
    )


def test_pack_loads_and_registers_every_node(editor, comfy_client) -> None:
    nodes = _pack_nodes(comfy_client)
    assert len(nodes) >= 15, nodes
    registered = editor.js("() => Object.keys(LiteGraph.registered_node_types)")
    assert set(nodes) <= set(registered), f"not registered in the editor: {set(nodes) - set(registered)}"
    extensions = editor.js("() => app.extensions.map((e) => e.name)")
    for name in ("cxr_counterfactual.panels", "cxr_counterfactual.radiograph", "cxr_counterfactual.tokens",
                 "cxr_counterfactual.attention"):  # fmt: skip
        assert name in extensions
    assert editor.pack_errors() == []


def test_a_second_copy_of_the_editor_code_registers_nothing_and_raises_nothing(editor) -> None:
    """ComfyUI serves js/ under the pyproject name and again under the pack's folder name, so a user whose
    folder has another name loads every file twice; before, the second copy threw "already registered".
    Here each entry file is imported again under another URL (a new module instance, as the second path
    gives) in the running editor."""
    files = sorted(p.name for p in (REPO / "js").glob("*.js") if "\nregisterOnce(app, {" in p.read_text())
    assert len(files) == 5, files
    before = editor.js("() => app.extensions.map((e) => e.name)")
    errors = editor.js(
        """async (files) => {
          const errors = [];
          for (const f of files) {
            try { await import(new URL(`extensions/comfyui-cxr-counterfactual/${f}?copy=2`, location.href).href); }
            catch (e) { errors.push(`${f}: ${e}`); }
          }
          return errors;
        }""",
        files,
    )
    after = editor.js("() => app.extensions.map((e) => e.name)")
    assert errors == [] and after == before, (errors, before, after)
    ours = [n for n in after if n.startswith("cxr_counterfactual.")]
    assert len(ours) == len(set(ours)) == 5, ours
    assert editor.pack_errors() == []


def test_templates_are_ordered_under_a_folder_of_another_name(editor) -> None:
    """The server keys templates by the pack's folder name; under another name (here the server's answer
    is rewritten to "ComfyUI-CXR", in reverse order) the pack's list is still put in its order."""
    listed = editor.js(
        """async () => {
          const real = window.fetch;
          window.fetch = async (...args) => {
            const r = await real(...args);
            if (!String(args[0]).includes("workflow_templates")) return r;
            const t = await r.json();
            t["ComfyUI-CXR"] = [...t["comfyui-cxr-counterfactual"]].reverse();
            delete t["comfyui-cxr-counterfactual"];
            return new Response(JSON.stringify(t), { status: 200, headers: { "Content-Type": "application/json" } });
          };
          try { return (await app.api.getWorkflowTemplates())["ComfyUI-CXR"]; } finally { window.fetch = real; }
        }"""
    )
    assert len(listed) == 7 and listed[0] == FULL and listed == sorted(listed), listed


def test_every_node_has_a_help_page_the_editor_fetches(editor, comfy_client) -> None:
    for node in _pack_nodes(comfy_client):
        status = editor.js(
            "async (n) => (await fetch(`extensions/comfyui-cxr-counterfactual/docs/${n}/en.md`)).status", node
        )
        assert status == 200, f"{node}: help page status {status}"
    # the editor's own help panel (node library, '?' on the node): it fetches our page, with no 404
    before = len(editor.requests)
    editor.js("() => app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library')")
    editor.page.locator("input.search-box-input").first.fill("CXR Metrics")
    item = editor.page.locator(".p-tree-node-content", has_text="CXR Metrics (SSIM")
    item.first.hover()
    item.first.locator("button.help-button").click()
    editor.page.get_by_text("How to use").first.wait_for(timeout=10_000)
    fetched = [u for u in editor.requests[before:] if "/docs/" in u]
    assert fetched == [f"{editor.base_url}/extensions/comfyui-cxr-counterfactual/docs/CXRMetrics/en.md"], (
        fetched
    )
    assert not [f for f in editor.failed if "/docs/" in f], editor.failed
    editor.shot("editor_help")
    editor.js("() => app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library')")


def test_every_template_loads_without_a_missing_node_dialog(editor, comfy_client) -> None:
    templates = editor.js("async () => (await (await fetch('api/workflow_templates')).json())")
    ours = templates["comfyui-cxr-counterfactual"]
    assert len(ours) == 7
    assert sorted(ours)[0] == FULL, "the full method comes first"
    for name in sorted(ours):
        editor.load_template(name)
        assert editor.missing_node_dialog() is None, name
        types = editor.js(
            "() => app.graph.nodes.filter((n) => n.has_errors || !n.constructor.nodeData && n.type !== 'Note').map((n) => n.type)"
        )
        assert types == [], f"{name}: nodes without a definition: {types}"
    # the template browser itself: our cards, titled and in order
    editor.js("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    editor.page.wait_for_timeout(1500)
    editor.page.get_by_text("comfyui-cxr-counterfactual").first.click()
    editor.page.wait_for_timeout(1500)
    assert editor.page.get_by_text(FULL).first.is_visible()
    editor.shot("editor_templates")
    editor.close_dialogs()


def test_dicom_uploads_through_the_node_file_chooser_and_previews(editor, tmp_path) -> None:
    dcm = tmp_path / "browser_test_chest.dcm"
    _write_dicom(dcm)
    _new_image_loader(editor)
    editor.frame(100, 60, 1.2)
    before = len(editor.requests)
    with editor.page.expect_file_chooser() as chooser:
        editor.js(
            """() => { const n = app.graph.nodes.find((n) => n.type === 'CXRImageLoader');
                       n.widgets.find((w) => w.name === 'upload radiograph').callback(); }"""
        )
    assert ".dcm" in (chooser.value.element.get_attribute("accept") or "")
    chooser.value.set_files(str(dcm))
    editor.page.wait_for_function(
        """() => { const n = app.graph.nodes.find((n) => n.type === 'CXRImageLoader');
                   const img = document.querySelector('[data-cxr-panel="cxr_radiograph_preview"] img');
                   return n.widgets.find((w) => w.name === 'image').value === 'browser_test_chest.dcm'
                          && img && img.complete && img.naturalWidth > 0; }""",
        timeout=30_000,
    )
    size = editor.js("() => { const i = document.querySelector('[data-cxr-panel=\"cxr_radiograph_preview\"] img');"
                     " return [i.naturalWidth, i.naturalHeight]; }")  # fmt: skip
    assert size == [200, 240], "the preview is the DICOM rendered at its own aspect"
    new = editor.requests[before:]
    assert any("/upload/image" in u for u in new)
    assert not [u for u in new if "/view" in u and ".dcm" in u], "the editor fetched the DICOM to draw it"
    editor.shot("editor_dicom_upload")


def test_dicom_upload_button_under_nodes_2(editor, tmp_path) -> None:
    """The "Nodes 2.0" (Vue) renderer draws the upload button as a real button: clicking it uploads and previews."""
    dcm = tmp_path / "browser_test_vue.dcm"
    _write_dicom(dcm)
    _new_image_loader(editor)
    with _nodes_2(editor):
        editor.frame(100, 60, 1.0)
        button = editor.page.get_by_role("button", name=re.compile("upload radiograph", re.I)).first
        button.wait_for(state="visible", timeout=30_000)
        with editor.page.expect_file_chooser() as chooser:
            button.click()
        assert ".dcm" in (chooser.value.element.get_attribute("accept") or "")
        chooser.value.set_files(str(dcm))
        editor.page.wait_for_function(
            """() => { const n = app.graph.nodes.find((n) => n.type === 'CXRImageLoader');
                       const img = [...document.querySelectorAll('[data-cxr-panel="cxr_radiograph_preview"] img')]
                           .find((i) => i.offsetParent);
                       return n.widgets.find((w) => w.name === 'image').value === 'browser_test_vue.dcm'
                              && img && img.complete && img.naturalWidth > 0; }""",
            timeout=30_000,
        )
        editor.shot("editor_dicom_upload_vue")


def test_dicom_dropped_on_the_node_uploads_and_previews(editor, tmp_path) -> None:
    import base64

    dcm = tmp_path / "dropped_chest.dcm"
    _write_dicom(dcm, h=180, w=220)
    _new_image_loader(editor)
    editor.frame(100, 60, 1.0)
    editor.js(
        """async ([b64, name]) => {
             const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
             const dt = new DataTransfer();
             dt.items.add(new File([bytes], name, { type: 'application/dicom' }));
             const canvas = app.canvas.canvas, rect = canvas.getBoundingClientRect();
             const n = app.graph.nodes.find((n) => n.type === 'CXRImageLoader');
             const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + 60, n.pos[1] + 40]);
             const at = { bubbles: true, cancelable: true, dataTransfer: dt,
                          clientX: rect.left + cx, clientY: rect.top + cy };
             canvas.dispatchEvent(new DragEvent('dragover', at));
             await new Promise((r) => setTimeout(r, 100));
             canvas.dispatchEvent(new DragEvent('drop', at));
           }""",
        [base64.b64encode(dcm.read_bytes()).decode(), dcm.name],
    )
    editor.page.wait_for_function(
        """() => { const n = app.graph.nodes.find((n) => n.type === 'CXRImageLoader');
                   const img = document.querySelector('[data-cxr-panel="cxr_radiograph_preview"] img');
                   return n.widgets.find((w) => w.name === 'image').value === 'dropped_chest.dcm'
                          && img && img.complete && img.naturalWidth === 220 && img.naturalHeight === 180; }""",
        timeout=30_000,
    )


def _boxes(editor) -> list[dict]:
    return editor.js(
        """() => app.graph.nodes.map((n) => { const t = LiteGraph.NODE_TITLE_HEIGHT;
             return {id: n.id, title: n.title, x: n.pos[0], y: n.pos[1] - t, w: n.size[0], h: n.size[1] + t,
                     images: !!(n.imgs && n.imgs.length)}; })"""
    )


def _overlaps(boxes: list[dict]) -> list[tuple[str, str]]:
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            ):
                out.append((a["title"], b["title"]))
    return out


def test_full_workflow_run_shows_metrics_table_and_uncovered_previews(editor) -> None:
    editor.load_template(FULL)
    assert _overlaps(_boxes(editor)) == [], "nodes overlap before the run"
    bands = editor.js(
        """() => app.graph.groups.map((g) => ({ title: 'group title ' + g.title, x: g.pos[0], y: g.pos[1],
                                                 w: g.size[0], h: g.titleHeight, images: false }))"""
    )
    assert len(bands) >= 4 and all(b["h"] > 0 for b in bands)
    assert _overlaps(bands + _boxes(editor)) == [], "a group title is covered (or groups overlap)"
    editor.js(
        """() => { for (const n of app.graph.nodes) {
              if (n.type === 'CXRImageLoader') n.widgets.find((w) => w.name === 'working_size').value = 128;
              if (n.type === 'KSampler') n.widgets.find((w) => w.name === 'steps').value = 3; } }"""
    )
    editor.page.get_by_role("button", name=re.compile(r"^Run", re.I)).first.click()
    editor.page.wait_for_function(
        "() => document.querySelector('[data-cxr-panel=\"cxr_results\"] td:nth-child(2)') !== null",
        timeout=600_000,
    )
    editor.page.wait_for_function(
        "() => app.graph.nodes.filter((n) => n.type === 'SaveImage').every((n) => n.imgs && n.imgs.length)",
        timeout=60_000,
    )
    editor.page.wait_for_timeout(1500)
    table = editor.js(
        """() => [...document.querySelectorAll('[data-cxr-panel="cxr_results"] tr')].map(
             (tr) => [...tr.children].map((c) => c.textContent))"""
    )
    assert table[0][0] == "metric"
    cells = {row[0]: row[1] for row in table[1:]}
    for label in ("SSIM global", "SSIM outside region", "PSNR global", "Edit localisation"):
        assert re.fullmatch(r"-?\d+\.\d+( dB)?", cells[label]), (label, cells[label])
    visible = editor.js(
        """() => { const p = document.querySelector('[data-cxr-panel="cxr_results"]');
                   return p.scrollHeight <= p.clientHeight + 2; }"""
    )
    assert visible, "every line of the metrics table is visible without scrolling"
    boxes = _boxes(editor)
    assert _overlaps(boxes) == [], "after the run a node covers another (a preview is hidden)"
    assert sum(b["images"] for b in boxes) >= 5
    editor.page.set_viewport_size({"width": 2600, "height": 1100})
    editor.js("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    editor.page.wait_for_timeout(800)
    editor.shot("editor_overview")
    editor.page.set_viewport_size({"width": 2400, "height": 1350})
    gate = next(b for b in boxes if b["title"] == "Anatomy gate")
    editor.frame(gate["x"] - 40, min(b["y"] for b in boxes) - 70, 0.62)  # LiteGraph draws text from 0.6 up
    editor.shot("editor_full_run")
    editor.page.set_viewport_size({"width": 1800, "height": 1100})
    metrics = next(b for b in boxes if b["title"] == "Metrics")
    editor.frame(metrics["x"] - 10, metrics["y"], 0.95)
    editor.shot("editor_metrics")
    # the "Nodes 2.0" (Vue) renderer shows the same panel: every row there, nothing to scroll, nothing editable
    with _nodes_2(editor):
        editor.page.wait_for_timeout(3000)
        vue = editor.js(
            """() => { const p = [...document.querySelectorAll('[data-cxr-panel="cxr_results"]')].find((e) => e.offsetParent);
                       return p && [p.querySelectorAll('tr').length, p.scrollHeight <= p.clientHeight + 2,
                                    p.querySelectorAll('input, textarea, [contenteditable="true"]').length]; }"""
        )
        editor.shot("editor_metrics_vue")
    assert vue == [len(table), True, 0], vue


def test_token_checker_shows_tokens_highlights_and_warns(editor) -> None:
    editor.js("() => { app.graph.clear(); }")
    editor.js(
        """() => { const n = LiteGraph.createNode('CXRPrompt'); n.pos = [80, 80]; app.graph.add(n);
                   const set = (k, v) => { n.widgets.find((w) => w.name === k).value = v; };
                   set('text', 'chest x-ray, PA view, left pleural effusion');
                   set('pathology_words', 'effusion, pneumothorax');
                   set('anatomy_words', 'left=left_lung'); }"""
    )
    editor.frame(80, 40, 1.3)
    editor.page.wait_for_function(
        "() => document.querySelectorAll('[data-cxr-panel=\"cxr_tokens\"] .cxr-token').length > 0",
        timeout=30_000,
    )
    chips = editor.js(
        """() => [...document.querySelectorAll('[data-cxr-panel="cxr_tokens"] .cxr-token')].map(
             (c) => [c.firstChild.textContent, c.className])"""
    )
    assert [t for t, _ in chips] == ["chest", "x", "-", "ray", ",", "pa", "view", ",", "left", "ple", "ural", "ef",
                                     "fusion"]  # fmt: skip
    assert [t for t, c in chips if "cxr-pathology" in c] == ["ef", "fusion"]
    assert [t for t, c in chips if "cxr-anatomy" in c] == ["left"]
    warning = editor.js(
        "() => document.querySelector('[data-cxr-panel=\"cxr_tokens\"] .cxr-warn').textContent"
    )
    assert "'pneumothorax' (pathology) is not in the prompt" in warning
    assert "'effusion' (pathology) splits into 2 tokens" in warning
    editor.page.wait_for_timeout(500)
    editor.shot("editor_tokens")
    # the "Nodes 2.0" (Vue) renderer shows the same chips, highlights and warning
    with _nodes_2(editor):
        editor.page.wait_for_function(
            """() => [...document.querySelectorAll('[data-cxr-panel="cxr_tokens"]')].some(
                 (p) => p.offsetParent && p.querySelectorAll('.cxr-token').length > 0)""",
            timeout=30_000,
        )
        vue = editor.js(
            """() => { const p = [...document.querySelectorAll('[data-cxr-panel="cxr_tokens"]')].find((e) => e.offsetParent);
                       return [[...p.querySelectorAll('.cxr-token')].map((c) => c.firstChild.textContent),
                               [...p.querySelectorAll('.cxr-token.cxr-pathology')].map((c) => c.firstChild.textContent),
                               (p.querySelector('.cxr-warn') || {}).textContent || '']; }"""
        )
        editor.shot("editor_tokens_vue")
    assert vue[0] == [t for t, _ in chips] and vue[1] == ["ef", "fusion"], vue
    assert "'pneumothorax' (pathology) is not in the prompt" in vue[2], vue
    # typing updates it: the missing word added to the prompt is found
    editor.js(
        """() => { const n = app.graph.nodes.find((n) => n.type === 'CXRPrompt');
                   n.widgets.find((w) => w.name === 'text').value = 'left pleural effusion, small pneumothorax'; }"""
    )
    editor.page.wait_for_function(
        """() => !document.querySelector('[data-cxr-panel="cxr_tokens"]').textContent.includes('not in the prompt')""",
        timeout=10_000,
    )


def _queue_and_wait(editor) -> dict:
    """Click Run; the outcome of that prompt: {"status": "success"} or {"status": "error", "message": ...}."""
    editor.js(
        """() => { window.__cxrOutcome = null; const api = window.comfyAPI.api.api;
                   api.addEventListener('execution_error', (e) => { window.__cxrOutcome = {
                       status: 'error', message: e.detail.exception_message, node: e.detail.node_type }; },
                     { once: true });
                   api.addEventListener('execution_success', () => {
                       window.__cxrOutcome = window.__cxrOutcome || { status: 'success' }; }, { once: true }); }"""
    )
    editor.page.get_by_role("button", name=re.compile(r"^Run", re.I)).first.click()
    editor.page.wait_for_function("() => window.__cxrOutcome !== null", timeout=600_000)
    return editor.js("() => window.__cxrOutcome")


def test_editing_the_positive_prompt_alone_cannot_leave_the_regulated_words_stale(editor) -> None:
    editor.load_template(FULL)
    widgets = editor.js(
        """() => Object.fromEntries(app.graph.nodes.filter((n) => n.mode === 0 && n.widgets).map(
             (n) => [n.title, n.widgets.map((w) => w.name)]))"""
    )
    typed = sorted(t for t, names in widgets.items() if "text" in names or "pathology_words" in names)
    prompts = [t for t in typed if "pathology_words" in widgets[t]]
    assert len(prompts) == 1, f"the prompt and its regulated words are typed in one node only: {typed}"
    prompt_title = prompts[0]
    for node in (
        "AnatomyAttentionGate",
        "PathologyCrossAttnReweight",
        "EnergyLatentCorrector",
        "AttentionMapCapture",
    ):
        names = editor.js(
            "(t) => app.graph.nodes.find((n) => n.type === t).widgets.map((w) => w.name)", node
        )  # fmt: skip
        # (the capture's optional `words` only picks among the prompt's words; the prompt node checks them)
        assert not {"text", "pathology_words"} & set(names), f"{node} still types its own words: {names}"
    editor.js(
        """(title) => { for (const n of app.graph.nodes) {
              if (n.type === 'CXRImageLoader') n.widgets.find((w) => w.name === 'working_size').value = 128;
              if (n.type === 'KSampler') n.widgets.find((w) => w.name === 'steps').value = 2;
              if (n.title === title) n.widgets.find((w) => w.name === 'text').value =
                  'chest x-ray, PA view, small right pleural effusion'; } }""",
        prompt_title,
    )
    # the edited prompt keeps the words: the run follows it (the server was sent the new text, once)
    assert _queue_and_wait(editor) == {"status": "success"}
    sent = editor.js(
        """async () => { const h = await (await fetch('api/history?max_items=1')).json();
                         const p = Object.values(h)[0].prompt[2];
                         return Object.values(p).filter((n) => 'text' in n.inputs).map((n) => n.inputs.text); }"""
    )
    assert "chest x-ray, PA view, small right pleural effusion" in sent
    assert "chest x-ray, PA view, left pleural effusion" not in sent, (
        "no stale copy of the old prompt was sent"
    )
    # the edited prompt drops a regulated word: the run stops, naming the word, before sampling
    editor.js(
        """(title) => { app.graph.nodes.find((n) => n.title === title).widgets.find((w) => w.name === 'text')
                          .value = 'chest x-ray, PA view, cardiomegaly'; }""",
        prompt_title,
    )
    outcome = _queue_and_wait(editor)
    assert outcome["status"] == "error", outcome
    assert "pleural" in outcome["message"] or "effusion" in outcome["message"], outcome
    editor.page.wait_for_timeout(800)
    editor.shot("editor_prompt_mismatch")
    editor.close_dialogs()
