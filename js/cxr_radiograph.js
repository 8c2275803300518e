// CXRImageLoader in the editor: upload a radiograph (DICOM .dcm/.dicom, PNG, JPEG) with a button or by
// dropping it on the node; the file goes to the server's /upload/image route (ComfyUI's input folder).
// Before the node has run, its preview is a PNG rendering from /cxr_counterfactual/radiograph_preview
// (the browser cannot draw DICOM, so the node never fetches the DICOM itself); after a run, the node's
// own UI output (the working image) is the preview.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { fitNode, panelWidget, registerOnce } from "./cxr_dom.js";

const NODE = "CXRImageLoader";
const EXTENSIONS = [".dcm", ".dicom", ".png", ".jpg", ".jpeg"];
const ACCEPT = [...EXTENSIONS, "application/dicom", "image/png", "image/jpeg"].join(",");
const PREVIEW_PX = 256;

const accepted = (file) => EXTENSIONS.some((ext) => file.name.toLowerCase().endsWith(ext));

async function uploadRadiograph(file) {
  const body = new FormData();
  body.append("image", file, file.name);
  body.append("type", "input");
  const resp = await api.fetchApi("/upload/image", { method: "POST", body });
  if (resp.status !== 200) throw new Error(`upload of ${file.name} failed: ${resp.status} ${resp.statusText}`);
  const data = await resp.json();
  return data.subfolder ? `${data.subfolder}/${data.name}` : data.name;
}

function showPreview(node, filename) {
  const widget = panelWidget(node, "cxr_radiograph_preview", (panel) => (panel.hidden ? 0 : PREVIEW_PX));
  const panel = widget.element;
  panel.hidden = !filename;
  panel.replaceChildren();
  if (!filename) return fitNode(node);
  const img = document.createElement("img");
  img.alt = filename;
  img.style.cssText = "width:100%;height:100%;object-fit:contain;display:block";
  img.src = api.apiURL(`/cxr_counterfactual/radiograph_preview?filename=${encodeURIComponent(filename)}`);
  img.onerror = () => {
    panel.replaceChildren(document.createTextNode(`no preview of ${filename} (see the server log)`));
  };
  panel.appendChild(img);
  panel.dataset.filename = filename;
  fitNode(node);
}

async function takeFile(node, file) {
  if (!accepted(file)) {
    app.extensionManager?.toast?.add({
      severity: "warn",
      summary: "CXR Image Loader",
      detail: `${file.name}: expected a radiograph (${EXTENSIONS.join(", ")})`,
      life: 5000,
    });
    return false;
  }
  const name = await uploadRadiograph(file);
  const combo = node.widgets.find((w) => w.name === "image");
  if (!combo.options.values.includes(name)) combo.options.values.push(name);
  combo.value = name;
  combo.callback?.(name);
  return true;
}

function chooseFile(node) {
  const input = document.createElement("input");
  input.type = "file";
  input.accept = ACCEPT;
  input.style.display = "none";
  input.dataset.cxrUpload = "radiograph";
  input.onchange = async () => {
    if (input.files?.length) await takeFile(node, input.files[0]);
    input.remove();
  };
  document.body.appendChild(input);
  input.click();
}

registerOnce(app, {
  name: "cxr_counterfactual.radiograph",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, arguments);
      const combo = this.widgets.find((w) => w.name === "image");
      const upload = this.addWidget("button", "upload radiograph", "upload", () => chooseFile(this), {
        serialize: false,
      });
      upload.label = "upload radiograph (DICOM, PNG, JPEG)";
      upload.serialize = false;
      const callback = combo.callback;
      combo.callback = (value) => {
        callback?.call(combo, value);
        showPreview(this, value);
      };
      requestAnimationFrame(() => showPreview(this, combo.value));
    };
    nodeType.prototype.onDragOver = function (e) {
      return !!e?.dataTransfer?.types?.includes?.("Files");
    };
    nodeType.prototype.onDragDrop = async function (e) {
      const file = [...(e?.dataTransfer?.files ?? [])][0];
      if (!file) return false;
      return await takeFile(this, file);
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (message?.images?.length) showPreview(this, null); // the run's own preview replaces ours
    };
  },
});
