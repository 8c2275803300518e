"""ComfyUI node pack: mask-guided attention regulation for counterfactual CXR synthesis.

Thin entry point: the V3 extension lives in ``nodes/``, the algorithms in
``cxr_core/``. Nothing is patched at import time.
"""

WEB_DIRECTORY = "./js"

# ComfyUI always imports this file as a package. pytest, collecting tests/, may import
# it alone (as "__init__", when the checkout's folder name is not an identifier);
# there is no package to import from then, and nothing to register.
if __package__:
    from .nodes import comfy_entrypoint
    from .nodes.editor_routes import register_with_server

    register_with_server()  # the editor's prompt-token and radiograph-preview routes (js/ calls them)

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
