// The CXR Prompt node's token check: while the user edits the prompt or the regulated words, the node
// shows the prompt's tokens (from /cxr_counterfactual/tokens, the pack's own tokenisation, SD1 tokenizer
// unless the node says otherwise), highlights the tokens of the pathology and anatomy words, and warns
// when a word is missing from the prompt or splits into several tokens.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { el, fitNode, panelWidget, registerOnce } from "./cxr_dom.js";

const NODE = "CXRPrompt";
const FIELDS = ["text", "pathology_words", "anatomy_words"];
const POLL_MS = 700;

function values(node) {
  const out = {};
  for (const name of FIELDS) out[name] = String(node.widgets?.find((w) => w.name === name)?.value ?? "");
  return out;
}

function render(panel, result) {
  panel.replaceChildren();
  const chips = el("div", { class: "cxr-tokens" });
  let wordStart = true; // CLIP's BPE marks a word's last piece; the next token starts a new word
  for (const tok of result.tokens) {
    const roles = new Set(result.words.filter((w) => tok.words.includes(w.word)).map((w) => w.role));
    const cls = ["cxr-token"];
    if (wordStart) cls.push("cxr-word-start");
    wordStart = tok.word_end;
    if (roles.has("pathology")) cls.push("cxr-pathology");
    else if (roles.has("anatomy")) cls.push("cxr-anatomy");
    const chip = el("span", { class: cls.join(" "), title: `position ${tok.index}, id ${tok.id}` }, tok.text);
    chip.appendChild(el("sub", {}, String(tok.index)));
    chips.appendChild(chip);
  }
  panel.appendChild(chips);
  const warnings = [];
  for (const w of result.words) {
    if (w.status === "missing") warnings.push(`⚠ '${w.word}' (${w.role}) is not in the prompt`);
    else if (w.status === "empty") warnings.push(`⚠ '${w.word}' (${w.role}) tokenises to nothing`);
    else if (w.status === "split")
      warnings.push(`⚠ '${w.word}' (${w.role}) splits into ${w.token_count} tokens (positions ${w.positions.join(", ")})`);
  }
  const summary = `${result.tokens.length} prompt tokens (${result.family}); ` +
    `${result.words.length} regulated word(s)`;
  panel.appendChild(el("div", { class: warnings.length ? "cxr-warn" : "cxr-ok" },
    warnings.length ? `${summary}\n${warnings.join("\n")}` : `${summary}, all found as single tokens`));
  panel.dataset.lines = String(2 + warnings.length + Math.ceil(result.tokens.length / 8));
}

async function check(node) {
  const body = values(node);
  const key = JSON.stringify(body);
  if (node.cxrTokenKey === key) return;
  node.cxrTokenKey = key;
  const widget = panelWidget(node, "cxr_tokens", (panel) => 14 + 19 * Number(panel.dataset.lines || 2));
  const panel = widget.element;
  try {
    const resp = await api.fetchApi("/cxr_counterfactual/tokens", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: key,
    });
    const data = await resp.json();
    if (node.cxrTokenKey !== key) return; // a newer edit is on its way
    if (!resp.ok) {
      panel.replaceChildren(el("div", { class: "cxr-warn" }, `token check: ${data.error ?? resp.statusText}`));
      panel.dataset.lines = "2";
    } else render(panel, data);
  } catch (err) {
    panel.replaceChildren(el("div", { class: "cxr-warn" }, `token check unavailable: ${err}`));
    panel.dataset.lines = "2";
  }
  fitNode(node);
}

registerOnce(app, {
  name: "cxr_counterfactual.tokens",
  async setup() {
    // One poll for every CXR Prompt node: catches typing in either renderer without hooking each editor.
    setInterval(() => {
      for (const node of app.graph?.nodes ?? []) if (node.type === NODE) check(node);
    }, POLL_MS);
  },
});
