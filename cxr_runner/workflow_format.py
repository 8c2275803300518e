"""Convert between ComfyUI's editor (UI) workflow format and the API format the queue runs.

UI format: ``nodes`` (id, type, mode, inputs with link ids, outputs,
``widgets_values`` in widget order) and ``links`` ([id, from, from_slot, to,
to_slot, type]). API format: ``{id: {"class_type", "inputs", "_meta"}}``.
Widget order comes from the server's ``/object_info`` (``input_order``).
Bypassed nodes (mode 4) are removed and their inputs passed through by type,
as the editor does; muted nodes (mode 2) and notes are dropped.
"""

from __future__ import annotations

from typing import Any

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
BYPASS, MUTE = 4, 2


class WorkflowFormatError(ValueError):
    pass


def input_specs(info: dict, class_type: str) -> list[tuple[str, str, dict]]:
    """(name, type, options) of a node's inputs in the editor's order (required, then optional)."""
    if class_type not in info:
        raise WorkflowFormatError(
            f"node type '{class_type}' is not known to this server; install its node pack"
        )
    node = info[class_type]
    order = node.get("input_order") or {k: list(v) for k, v in node["input"].items()}
    out = []
    for group in ("required", "optional"):
        for name in order.get(group, []):
            spec = node["input"][group][name]
            kind = "COMBO" if isinstance(spec[0], list) else spec[0]
            out.append((name, kind, spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}))
    return out


def is_widget(kind: str) -> bool:
    return kind in WIDGET_TYPES


def widget_slots(info: dict, class_type: str) -> list[tuple[str, bool]]:
    """Widget names in widgets_values order; True marks the extra 'control after generate' value."""
    slots: list[tuple[str, bool]] = []
    for name, kind, opts in input_specs(info, class_type):
        if is_widget(kind):
            slots.append((name, False))
            if opts.get("control_after_generate"):
                slots.append((name, True))
    return slots


def ui_to_api(ui: dict, info: dict) -> dict:
    """The API-format prompt the editor would queue for this UI workflow."""
    nodes = {int(n["id"]): n for n in ui.get("nodes", [])}
    links = {int(lk[0]): lk for lk in ui.get("links", [])}

    def source(link_id: int | None) -> tuple[int, int] | None:
        """Follow a link back through bypassed nodes to a live output."""
        seen = 0
        while link_id is not None:
            lk = links.get(int(link_id))
            if lk is None:
                raise WorkflowFormatError(f"link {link_id} is referenced but not defined")
            origin, slot, ltype = int(lk[1]), int(lk[2]), lk[5]
            node = nodes.get(origin)
            if node is None:
                raise WorkflowFormatError(f"link {link_id} starts at missing node {origin}")
            if node.get("mode", 0) != BYPASS:
                return (origin, slot) if node.get("mode", 0) != MUTE else None
            link_id = next((i.get("link") for i in node.get("inputs", []) if i.get("type") == ltype), None)
            seen += 1
            if seen > len(nodes):
                raise WorkflowFormatError("bypass chain loops")
        return None

    api: dict[str, Any] = {}
    for nid, node in sorted(nodes.items()):
        ctype = node["type"]
        if ctype in FRONTEND_ONLY or node.get("mode", 0) in (BYPASS, MUTE):
            continue
        inputs: dict[str, Any] = {}
        values = list(node.get("widgets_values") or [])
        slots = widget_slots(info, ctype)
        if len(values) != len(slots):
            raise WorkflowFormatError(
                f"node {nid} ({ctype}): {len(values)} widget values, expected {len(slots)} ({[s for s, _ in slots]})"
            )
        for (name, extra), value in zip(slots, values, strict=True):
            if not extra:
                inputs[name] = value
        for slot in node.get("inputs", []):
            src = source(slot.get("link"))
            if src is not None:
                inputs[slot["name"]] = [str(src[0]), src[1]]
        entry: dict[str, Any] = {"class_type": ctype, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        api[str(nid)] = entry
    return api


def validate_ui(ui: dict, info: dict) -> list[str]:
    """Structural problems of a UI workflow against /object_info (empty list: valid)."""
    problems: list[str] = []
    nodes = {int(n["id"]): n for n in ui.get("nodes", [])}
    for nid, node in nodes.items():
        if node["type"] in FRONTEND_ONLY:
            continue
        if node["type"] not in info:
            problems.append(f"node {nid}: unknown type {node['type']}")
            continue
        n_slots = len(widget_slots(info, node["type"]))
        if len(node.get("widgets_values") or []) != n_slots:
            problems.append(
                f"node {nid} ({node['type']}): {len(node.get('widgets_values') or [])} widget values, expected {n_slots}"
            )
        specs = {name: kind for name, kind, _ in input_specs(info, node["type"])}
        for slot in node.get("inputs", []):
            if slot["name"] not in specs:
                problems.append(f"node {nid} ({node['type']}): no input named {slot['name']}")
            elif slot.get("link") is None and slot["name"] in info[node["type"]]["input"].get("required", {}):
                problems.append(
                    f"node {nid} ({node['type']}): required input {slot['name']} is not connected"
                )
    for lk in ui.get("links", []):
        lid, origin, oslot, target, tslot, ltype = lk[:6]
        if origin not in nodes or target not in nodes:
            problems.append(f"link {lid}: missing end node")
            continue
        o, t = nodes[origin], nodes[target]
        outs = info.get(o["type"], {}).get("output", [])
        if oslot >= len(outs) or outs[oslot] != ltype:
            problems.append(f"link {lid}: {o['type']} output {oslot} is not {ltype}")
        tin = t.get("inputs", [])
        if tslot >= len(tin) or tin[tslot].get("link") != lid or tin[tslot].get("type") != ltype:
            problems.append(f"link {lid}: {t['type']} input slot {tslot} does not hold it as {ltype}")
        if lid not in (o.get("outputs", [{}] * (oslot + 1))[oslot].get("links") or []):
            problems.append(f"link {lid}: not listed on {o['type']} output {oslot}")
    return problems


def is_link(value: Any) -> bool:
    """Whether an API-format input is a link ``[node id, output slot]`` rather than a value."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def node_ids(api: dict, node: str) -> list[str]:
    """Ids of the nodes whose ``_meta.title`` is ``node``; else the node with that id; else []."""
    hits = [nid for nid, n in api.items() if (n.get("_meta") or {}).get("title") == node]
    return hits or ([node] if node in api else [])


def target_nodes(api: dict, node: str, name: str) -> list[str]:
    """The ids whose value input ``name`` the address ``node.name`` sets (node by title, else by id).

    Raises WorkflowFormatError naming the workflow's nodes, or the node's value inputs.
    """
    ids = node_ids(api, node)
    if not ids:
        listed = ", ".join(
            f"'{(n.get('_meta') or {}).get('title', nid)}' (id {nid})" for nid, n in api.items()
        )
        raise WorkflowFormatError(
            f"'{node}.{name}': no node titled or numbered '{node}'; nodes in this workflow: {listed}"
        )
    for nid in ids:
        inputs = api[nid].get("inputs", {})
        values = ", ".join(k for k, v in inputs.items() if not is_link(v)) or "(none)"
        if name not in inputs:
            raise WorkflowFormatError(
                f"'{node}.{name}': node {nid} ({api[nid].get('class_type')}) has no input '{name}'; "
                f"its value inputs: {values}"
            )
        if is_link(inputs[name]):
            raise WorkflowFormatError(
                f"'{node}.{name}': input '{name}' of node {nid} is a link from another node, not a value; "
                f"its value inputs: {values}"
            )
    return ids


def set_input(api: dict, node: str, name: str, value: Any) -> None:
    """Set value input ``name`` of every node titled (else numbered) ``node``, in place."""
    for nid in target_nodes(api, node, name):
        api[nid]["inputs"][name] = value
