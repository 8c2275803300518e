"""ComfyUI node pack: mask-guided attention regulation for counterfactual CXR synthesis.

Thin entry point: the V3 extension lives in ``nodes/``, the algorithms in
``cxr_core/``. Nothing is patched at import time.
"""

from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./js"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
