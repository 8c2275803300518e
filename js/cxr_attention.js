// Attention Map Render in the editor: browse the recorded attention maps by word and by sampling step
// (UI payload "cxr_attention": every word at the mean and at each recorded step).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { el, fitNode, panelWidget, registerOnce } from "./cxr_dom.js";

const NODE = "AttentionMapRender";
const VIEW_PX = 300;

function viewUrl(image) {
  const q = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder ?? "", type: image.type });
  return api.apiURL(`/view?${q}`);
}

function render(panel, frames) {
  panel.replaceChildren();
  const box = el("div", { class: "cxr-browser" });
  const words = [...new Set(frames.map((f) => f.word))];
  const wordSel = el("select", { "data-cxr": "word", title: "word" });
  const stepSel = el("select", { "data-cxr": "step", title: "sampling step" });
  for (const w of words) wordSel.appendChild(el("option", { value: w }, w));
  const img = el("img", { alt: "attention map" });
  const fillSteps = () => {
    const current = stepSel.value;
    stepSel.replaceChildren();
    for (const f of frames.filter((f) => f.word === wordSel.value)) {
      stepSel.appendChild(el("option", { value: f.step }, f.step === "mean" ? "mean of steps" : `step ${f.step}`));
    }
    if ([...stepSel.options].some((o) => o.value === current)) stepSel.value = current;
  };
  const show = () => {
    const f = frames.find((f) => f.word === wordSel.value && f.step === stepSel.value);
    if (f) img.src = viewUrl(f.image);
  };
  wordSel.onchange = () => { fillSteps(); show(); };
  stepSel.onchange = show;
  const row = el("div", { class: "cxr-row" });
  row.append(el("span", {}, "word"), wordSel, el("span", {}, "step"), stepSel);
  box.append(row, img);
  panel.appendChild(box);
  fillSteps();
  show();
}

registerOnce(app, {
  name: "cxr_counterfactual.attention",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const frames = message?.cxr_attention;
      if (!Array.isArray(frames) || !frames.length) return;
      const widget = panelWidget(this, "cxr_attention_browser", () => VIEW_PX + 32);
      render(widget.element, frames);
      fitNode(this);
    };
  },
});
