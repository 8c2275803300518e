// Front-end helpers of the CXR Counterfactual pack.
// Shows the text summary a node returns in its UI payload ("text") under the node,
// so metrics and mask summaries are readable without opening the output files.
import { app } from "../../scripts/app.js";

const PACK_CATEGORY = "CXR Counterfactual";

app.registerExtension({
  name: "cxr_counterfactual.summaries",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.category?.startsWith(PACK_CATEGORY)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const lines = message?.text;
      if (!Array.isArray(lines) || lines.length === 0) return;
      const text = lines.join("\n");
      let widget = this.widgets?.find((w) => w.name === "cxr_summary");
      if (!widget) {
        widget = this.addWidget("text", "cxr_summary", "", () => {}, { multiline: true });
        if (widget.inputEl) widget.inputEl.readOnly = true;
        widget.serialize = false;
      }
      widget.value = text;
      this.setDirtyCanvas(true, true);
    };
  },
});
