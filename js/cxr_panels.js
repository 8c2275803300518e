// Read-only results in the pack's nodes: CXRMetrics' figures as a table (UI payload "cxr_table"),
// other summaries (UI payload "text", e.g. the FID nodes) as plain lines. Every line stays visible
// and nothing is editable, in the LiteGraph canvas and in Nodes 2.0.
import { app } from "../../scripts/app.js";
import { PACK_CATEGORY, el, fitNode, panelWidget, registerOnce } from "./cxr_dom.js";

const ROW_PX = 19;

function renderTable(panel, table) {
  panel.replaceChildren();
  const t = el("table");
  const head = el("tr");
  for (const c of table.columns) head.appendChild(el("th", {}, c));
  t.appendChild(head);
  for (const row of table.rows) {
    const tr = el("tr");
    for (const cell of row) tr.appendChild(el("td", {}, cell));
    t.appendChild(tr);
  }
  panel.appendChild(t);
  if (table.notes?.length) panel.appendChild(el("div", { class: "cxr-notes" }, table.notes.join("\n")));
  panel.dataset.lines = String(table.rows.length + 1 + (table.notes?.length ?? 0));
}

function renderLines(panel, lines) {
  panel.replaceChildren(el("pre", {}, lines.join("\n")));
  panel.dataset.lines = String(lines.length);
}

const panelHeight = (panel) => 12 + ROW_PX * Number(panel.dataset.lines || 1);

registerOnce(app, {
  name: "cxr_counterfactual.panels",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.category?.startsWith(PACK_CATEGORY)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const table = message?.cxr_table?.[0];
      const lines = message?.text;
      if (!table && !(Array.isArray(lines) && lines.length)) return;
      const widget = panelWidget(this, "cxr_results", panelHeight);
      if (table) renderTable(widget.element, table);
      else renderLines(widget.element, lines);
      fitNode(this);
    };
  },
});
