// Shared DOM helpers of the CXR Counterfactual pack's editor code: a read-only panel widget
// that works in both renderers (LiteGraph canvas and Nodes 2.0), and the pack's styles.
export const PACK_CATEGORY = "CXR Counterfactual";

const STYLE = `
.cxr-panel { box-sizing: border-box; width: 100%; height: 100%; overflow: auto; padding: 4px 6px;
  font: 12px/1.35 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; color: var(--input-text, #ddd);
  background: var(--comfy-input-bg, #222); border-radius: 6px; user-select: text; cursor: text; }
.cxr-panel table { border-collapse: collapse; width: 100%; }
.cxr-panel th, .cxr-panel td { padding: 1px 6px; text-align: right; white-space: nowrap;
  border-bottom: 1px solid rgba(128,128,128,0.25); }
.cxr-panel th:first-child, .cxr-panel td:first-child { text-align: left; }
.cxr-panel th { font-weight: 600; color: var(--descrip-text, #aaa); }
.cxr-panel .cxr-notes { margin-top: 4px; color: var(--descrip-text, #999); white-space: pre-wrap; }
.cxr-panel pre { margin: 0; white-space: pre-wrap; }
.cxr-tokens { display: flex; flex-wrap: wrap; gap: 2px; }
.cxr-token { padding: 0 3px; border-radius: 3px; background: rgba(128,128,128,0.22); }
.cxr-token.cxr-word-start { margin-left: 4px; }
.cxr-token.cxr-pathology { background: #b8402c; color: #fff; }
.cxr-token.cxr-anatomy { background: #2c6fb8; color: #fff; }
.cxr-token sub { font-size: 9px; opacity: 0.7; margin-left: 1px; }
.cxr-warn { color: #f0b030; margin-top: 4px; white-space: pre-wrap; }
.cxr-ok { color: #6c6; margin-top: 4px; }
.cxr-browser { display: flex; flex-direction: column; gap: 4px; height: 100%; }
.cxr-browser .cxr-row { display: flex; gap: 6px; align-items: center; }
.cxr-browser select { flex: 1; min-width: 0; }
.cxr-browser img { flex: 1; min-height: 0; object-fit: contain; width: 100%; }
`;

function ensureStyle() {
  if (document.getElementById("cxr-counterfactual-style")) return;
  const el = document.createElement("style");
  el.id = "cxr-counterfactual-style";
  el.textContent = STYLE;
  document.head.appendChild(el);
}

// Register an editor extension unless one of that name is already there. ComfyUI serves this folder
// under the pyproject name and again under the pack's folder name, so where a user's folder has
// another name every file here is loaded twice; the second copy must not throw "already registered".
export function registerOnce(app, extension) {
  if (!(app.extensions ?? []).some((e) => e.name === extension.name)) app.registerExtension(extension);
}

// A read-only DOM panel under the node's widgets; `height()` gives the room it needs in pixels.
export function panelWidget(node, name, height) {
  ensureStyle();
  let widget = node.widgets?.find((w) => w.name === name);
  if (widget) return widget;
  const el = document.createElement("div");
  el.className = "cxr-panel";
  el.dataset.cxrPanel = name;
  widget = node.addDOMWidget(name, "cxr_panel", el, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => el.textContent,
    setValue: () => {},
    getMinHeight: () => height(el),
  });
  widget.serialize = false;
  return widget;
}

// Grow the node so that a panel that changed size is fully visible (never shrink what the user sized).
export function fitNode(node) {
  const want = node.computeSize();
  node.setSize([Math.max(node.size[0], want[0]), Math.max(node.size[1], want[1])]);
  node.setDirtyCanvas(true, true);
}

export function el(tag, attrs = {}, text = undefined) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
