"""Server routes the pack's editor code calls (js/): prompt tokens and radiograph previews.

    POST /cxr_counterfactual/tokens   {"text", "pathology_words", "anatomy_words", "family"}
    GET  /cxr_counterfactual/radiograph_preview?filename=<name in the input folder>

Registered on ComfyUI's PromptServer routes (also served under /api/). Inputs
are validated and size-limited; bad input gets a 400 with a JSON error that
names the field, never a server error. The work is in cxr_core/token_check.py
and cxr_core/radiograph_preview.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from aiohttp import web

from ..cxr_core.image_limits import PixelLimitError
from ..cxr_core.input_paths import InputPathError, resolve_input_path
from ..cxr_core.radiograph_io import RadiographError
from ..cxr_core.radiograph_preview import preview_png
from ..cxr_core.token_check import TokenCheckError, TokenRequest, check_prompt, host_tokenizer

log = logging.getLogger("cxr_counterfactual.nodes.editor_routes")

ROUTE_PREFIX = "/cxr_counterfactual"
MAX_BODY_BYTES = 32 * 1024
MAX_FILENAME_CHARS = 512


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def tokens(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _error(
            413, f"body: expected at most {MAX_BODY_BYTES} bytes, received {request.content_length}"
        )
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, f"body: expected at most {MAX_BODY_BYTES} bytes, received more")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(
            400, f'body: expected a JSON object such as {{"text": "..."}}, received invalid JSON ({exc})'
        )
    try:
        req = TokenRequest.from_json(body)
        result = await asyncio.to_thread(lambda: check_prompt(host_tokenizer(req.family), req))
    except TokenCheckError as exc:
        return _error(400, str(exc))
    except (
        Exception
    ) as exc:  # a bug, not bad input: logged with its traceback, answered as JSON, server lives on
        log.exception("token check failed")
        return _error(500, f"token check failed: {type(exc).__name__}: {exc}")
    return web.json_response(result)


async def radiograph_preview(request: web.Request) -> web.Response:
    import folder_paths

    name = request.query.get("filename", "")
    if not name or len(name) > MAX_FILENAME_CHARS:
        return _error(400, f"filename: expected a file name in ComfyUI's input folder (1-{MAX_FILENAME_CHARS} "
                           f"characters), received {len(name)} characters")  # fmt: skip
    try:
        path = resolve_input_path(name, folder_paths.get_input_directory(), what="filename")
        png = await asyncio.to_thread(preview_png, path)
    except InputPathError as exc:
        return _error(404 if "not found" in str(exc) else 400, str(exc))
    except (RadiographError, PixelLimitError) as exc:
        return _error(400, f"filename: {exc}")
    except (
        Exception
    ) as exc:  # a bug or an unreadable file the reader did not foresee: logged, answered as JSON
        log.exception("radiograph preview of %r failed", name)
        return _error(500, f"radiograph preview failed: {type(exc).__name__}: {exc}")
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-cache"})


def add_routes(routes: web.RouteTableDef) -> None:
    routes.post(f"{ROUTE_PREFIX}/tokens")(tokens)
    routes.get(f"{ROUTE_PREFIX}/radiograph_preview")(radiograph_preview)


def register_with_server() -> bool:
    """Add the routes to a running ComfyUI's PromptServer; False (nothing done) outside ComfyUI."""
    server = sys.modules.get("server")
    prompt_server = getattr(getattr(server, "PromptServer", None), "instance", None)
    if prompt_server is None:
        return False
    add_routes(prompt_server.routes)
    log.debug("editor routes registered under %s", ROUTE_PREFIX)
    return True
