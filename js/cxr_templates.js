// The pack's templates in their intended order (full method, ablations, baselines). ComfyUI's template
// browser shows a custom node's templates under their file names, in the order the server lists them
// (the file system's); the file names start with their rank, so sorting them gives that order.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { registerOnce } from "./cxr_dom.js";

// The server keys templates by the pack's folder name, which a user may choose: the pack's list is the one
// holding its first template.
const FIRST = "1 Full method (gate, reweight, correction)";

registerOnce(app, {
  name: "cxr_counterfactual.templates",
  async init() {
    const original = api.getWorkflowTemplates.bind(api);
    api.getWorkflowTemplates = async function () {
      const templates = await original();
      for (const names of Object.values(templates ?? {})) {
        if (Array.isArray(names) && names.includes(FIRST)) {
          names.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
        }
      }
      return templates;
    };
  },
});
