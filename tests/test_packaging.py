"""The Comfy Registry metadata as ComfyUI itself reads it, and the workflow that publishes it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAW = "https://raw.githubusercontent.com/cxr-counterfactual/comfyui-cxr-counterfactual/main/"
REPO_FOLDER_IN_README = "comfyui-cxr-counterfactual"  # README: git clone <this repository> <this folder>


def test_registry_fields_parse_with_comfyuis_reader() -> None:
    assert f"git clone <this repository> {REPO_FOLDER_IN_README}" in (REPO / "README.md").read_text()
    from comfy_config.config_parser import extract_node_configuration

    config = extract_node_configuration(str(REPO))
    comfy, project = config.tool_comfy, config.project
    assert comfy.publisher_id == "cxr-counterfactual" and comfy.display_name
    # ComfyUI serves the js folder under the project name (tool.comfy.web) and again under the folder name
    # (WEB_DIRECTORY); a name unlike the clone's folder makes the editor load every extension twice
    assert project.name == "comfyui-cxr-counterfactual" == REPO_FOLDER_IN_README
    assert comfy.web == "js" and (REPO / comfy.web / "cxr_panels.js").is_file()
    assert comfy.icon.startswith(RAW) and (REPO / comfy.icon.removeprefix(RAW)).is_file(), comfy.icon
    assert project.supported_comfyui_version == ">=0.3.75"
    assert project.supported_os == ["OS Independent"] and project.supported_accelerators == [
        "GPU :: NVIDIA CUDA"
    ]
    assert project.urls.repository and project.license.file == "LICENSE"
    # the node pack's own requirements are the registry's dependencies
    reqs = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert {r for r in reqs if r and not r.startswith("#")} == set(project.dependencies)


def test_publish_workflow_runs_the_registry_action_when_pyproject_changes() -> None:
    text = (REPO / ".github" / "workflows" / "publish.yml").read_text(encoding="utf-8")
    assert "uses: Comfy-Org/publish-node-action@v1" in text
    assert "personal_access_token: ${{ secrets.REGISTRY_ACCESS_TOKEN }}" in text
    assert 'paths: ["pyproject.toml"]' in text and "workflow_dispatch" in text
