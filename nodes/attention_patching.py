"""What every attention node does after reading its own inputs, written once.

The nodes check their inputs, build one contribution (cxr_core/attention/) and
call :func:`patch_model` with the sites read against the model (nodes/attention_sites.py):
a clone of the model, the contribution installed at those sites. A node that is
switched off returns its model before any of this (bit-identical output).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..cxr_core.attention.engine import install
from ..cxr_core.attention.prompt import RegulatedPrompt
from ..cxr_core.attention.protocol import Contribution
from ..cxr_core.attention.sites import SiteKey


def patch_model(model: Any, site_keys: Sequence[SiteKey], *contributions: Contribution) -> Any:
    """A clone of ``model`` with each contribution installed at ``site_keys``; the input model is untouched."""
    m = model.clone()
    for contribution in contributions:
        install(m, contribution, site_keys)
    return m


def require_prompt(node: str, prompt: object, need: str = "pathology") -> RegulatedPrompt:
    """The CXR_PROMPT input, with the words this node needs, or a clear error naming the fix."""
    if not isinstance(prompt, RegulatedPrompt):
        raise ValueError(
            f"{node}: prompt must come from a CXR Prompt node (CXR_PROMPT), received {type(prompt).__name__}"
        )
    if need == "pathology" and not prompt.pathology:
        raise ValueError(
            f"{node}: the CXR Prompt has no pathology_words; give the finding's words there, e.g. 'pleural, effusion'"
        )
    if need == "anatomy" and not prompt.anatomy:
        raise ValueError(
            f"{node}: the CXR Prompt has no anatomy_words; give word=organ pairs there, e.g. 'heart=heart'"
        )
    return prompt
