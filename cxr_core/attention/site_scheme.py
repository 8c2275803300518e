"""The attention sites of a UNet, read from the model itself (docs/METHOD.md, "Attention sites").

A :class:`SiteScheme` lists a diffusion model's attention sites in the order
the UNet runs them (input blocks, middle block, output blocks), each with its
downsampling level (stride-2 steps between the latent and the site) and its
transformer depth (SDXL runs up to 10 transformer blocks at one site; one
ComfyUI patch keyed (block, number) covers all of them). It also knows the
model family, the prediction type and the native image size, so that the names
users type mean the same on every supported model:

- ``all``; ``input`` / ``middle`` / ``output`` (whole paths);
- ``fine`` / ``mid`` / ``coarse``: the input and output sites at the model's
  finest, in-between and coarsest attention level (a model with two levels,
  SDXL, has nothing in between: there ``mid`` is its finer level, so ``mid``
  and ``coarse`` are 1/16 and 1/32 of the image side on every family);
  ``middle`` is the middle block;
- grid sizes at the native resolution: every site whose token grid has that
  side for a native-size image (SD1.5 512 px: 64, 32, 16, 8; SD2 768-v: 96,
  48, 24, 12; SDXL 1024 px: 64, 32), also written ``64x64``;
- explicit sites such as ``input4`` or ``output11``.

Discovery runs once per diffusion model (kept in a weak map keyed by the
model object, so nothing is written onto the model and nothing outlives it).
"""

from __future__ import annotations

import logging
import math
import re
import weakref
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("cxr_counterfactual.site_scheme")

SiteKey = tuple[str, int]  # (block, number) in ComfyUI's naming, e.g. ("input", 1)

SUPPORTED_FAMILIES = (
    "SD1.x (SD1.4/1.5 and fine-tunes: CLIP-L text encoder, 512 px)",
    "SD2.x (SD2.0/2.1 and fine-tunes: OpenCLIP-H text encoder, 512 px epsilon or 768 px v-prediction)",
    "SDXL (SDXL 1.0 base and fine-tunes, SSD-1B, Segmind Vega, KOALA: CLIP-L + CLIP-G, 1024 px)",
)
PATHS = ("input", "middle", "output")
LEVEL_NAMES = ("fine", "mid", "coarse", "middle")


class UnsupportedModelError(ValueError):
    """The model is not a UNet of a supported family; the message lists the families."""


def supported_families_text() -> str:
    return "; ".join(SUPPORTED_FAMILIES)


@dataclass(frozen=True)
class Site:
    """One attention site: a SpatialTransformer in a UNet block."""

    key: SiteKey
    level: int  # stride-2 downsamplings between the latent and the site
    depth: int  # transformer blocks at the site (block_index 0 .. depth-1)

    @property
    def name(self) -> str:
        return f"{self.key[0]}{self.key[1]}"


@dataclass(frozen=True)
class SiteScheme:
    """The attention sites of one model, in execution order, with the names users type."""

    family: str  # "SD1.x", "SD2.x" or "SDXL"
    prediction: str  # "epsilon", "v-prediction", ... (the model's own ModelType, lower case)
    native_px: int  # native image side: 512, 768 or 1024
    sites: tuple[Site, ...]

    @property
    def keys(self) -> tuple[SiteKey, ...]:
        return tuple(s.key for s in self.sites)

    def site(self, key: SiteKey) -> Site:
        for s in self.sites:
            if s.key == key:
                return s
        raise KeyError(f"{key[0]}{key[1]} is not an attention site of this {self.family} model")

    def index(self, key: SiteKey) -> int:
        """Position of a site in execution order."""
        return self.keys.index(key)

    def site_after(self, key: SiteKey) -> SiteKey | None:
        i = self.index(key)
        return self.keys[i + 1] if i + 1 < len(self.sites) else None

    @property
    def path_levels(self) -> tuple[int, ...]:
        """The distinct levels of the input/output sites, finest first."""
        return tuple(sorted({s.level for s in self.sites if s.key[0] != "middle"}))

    def named_levels(self) -> dict[str, frozenset[int]]:
        """Which levels ``fine``, ``mid`` and ``coarse`` name on this model."""
        lv = self.path_levels
        if not lv:
            return {"fine": frozenset(), "mid": frozenset(), "coarse": frozenset()}
        mid = lv[1:-1] if len(lv) >= 3 else lv[:1]
        return {"fine": frozenset(lv[:1]), "mid": frozenset(mid), "coarse": frozenset(lv[-1:])}

    @property
    def native_latent(self) -> int:
        return self.native_px // 8

    def native_grid(self, level: int) -> int:
        """Token grid side at a level for a native-size square image."""
        return grid_side(self.native_latent, level)

    def grid(self, latent_hw: tuple[int, int], key: SiteKey) -> tuple[int, int]:
        """(h, w) token grid of a site for a latent of (H, W), any aspect (ceil rounding per level)."""
        level = self.site(key).level
        return grid_side(int(latent_hw[0]), level), grid_side(int(latent_hw[1]), level)

    def grid_sizes(self) -> tuple[int, ...]:
        """The grid sides users can type, largest first."""
        return tuple(sorted({self.native_grid(s.level) for s in self.sites}, reverse=True))

    def describe(self) -> str:
        rows = []
        for s in self.sites:
            g = self.native_grid(s.level)
            rows.append(f"{s.name} ({g}x{g}{'' if s.depth == 1 else f', depth {s.depth}'})")
        return (
            f"{self.family} UNet, {self.prediction}, {self.native_px} px: {len(self.sites)} attention sites "
            + ", ".join(rows)
        )

    def parse(self, spec: str) -> tuple[SiteKey, ...]:
        """The sites a user string names on this model, in execution order (items combine as a union)."""
        text = (spec or "").strip().lower()
        if not text:
            raise ValueError(f"sites: empty; expected {self._expected()}")
        levels = self.named_levels()
        by_grid = {self.native_grid(s.level) for s in self.sites}
        chosen: set[SiteKey] = set()
        for raw in text.replace(";", ",").split(","):
            item = re.sub(
                r"^(\d+)x(\d+)$", lambda m: m[1] if m[1] == m[2] else m[0], raw.strip().replace(" ", "")
            )
            if not item:
                continue
            if item == "all":
                picked = set(self.keys)
            elif item in PATHS:
                picked = {s.key for s in self.sites if s.key[0] == item}
            elif item in levels:
                picked = {s.key for s in self.sites if s.key[0] != "middle" and s.level in levels[item]}
            elif item.isdigit() and int(item) in by_grid:
                picked = {s.key for s in self.sites if self.native_grid(s.level) == int(item)}
            else:
                key = _named_site(item)
                if key is None or key not in self.keys:
                    raise ValueError(
                        f"sites: cannot read '{raw.strip()}' on this model; expected {self._expected()}"
                    )
                picked = {key}
            if not picked:
                raise ValueError(
                    f"sites: '{raw.strip()}' names no attention site of this {self.family} model"
                )
            chosen |= picked
        return tuple(k for k in self.keys if k in chosen)

    def _expected(self) -> str:
        grids = ", ".join(str(g) for g in self.grid_sizes())
        names = ", ".join(s.name for s in self.sites)
        return (
            f"'all', 'input', 'middle', 'output', 'fine', 'mid', 'coarse', grid sizes at {self.native_px} px "
            f"({grids}), or sites of this {self.family} model ({names})"
        )


def grid_side(latent_side: int, level: int) -> int:
    """Side of the token grid ``level`` stride-2 convolutions (padding 1) below a latent side."""
    n = int(latent_side)
    for _ in range(level):
        n = math.ceil(n / 2)
    return n


def _named_site(item: str) -> SiteKey | None:
    for block in PATHS:
        if item.startswith(block):
            rest = item[len(block) :].lstrip("_")
            if rest.isdigit():
                return (block, int(rest))
    return None


# --- discovery ---------------------------------------------------------------------------------------

_SCHEMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def scheme_of(base_model: Any, diffusion_model: Any | None = None) -> SiteScheme:
    """The site scheme of a ComfyUI model (``comfy.model_base.BaseModel``), discovered once per UNet.

    ``diffusion_model`` defaults to ``base_model.diffusion_model`` (pass the patched object when a
    ModelPatcher replaces it). Raises :class:`UnsupportedModelError` for anything that is not a UNet
    of a supported family (DiT/MMDiT models such as SD3, Flux or PixArt, video UNets, ...).
    """
    unet = base_model.diffusion_model if diffusion_model is None else diffusion_model
    prediction = _prediction(base_model)
    try:
        cached = _SCHEMES.get(unet)
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is not None and cached.prediction == prediction:
        return cached
    scheme = discover_scheme(unet, prediction, _config_name(base_model))
    try:
        _SCHEMES[unet] = scheme
    except TypeError:
        pass
    log.debug("site scheme: %s", scheme.describe())
    return scheme


def _prediction(base_model: Any) -> str:
    model_type = getattr(base_model, "model_type", None)
    name = getattr(model_type, "name", None) or "EPS"
    return {"EPS": "epsilon", "V_PREDICTION": "v-prediction"}.get(name, name.lower().replace("_", "-"))


def _config_name(base_model: Any) -> str:
    cfg = getattr(base_model, "model_config", None)
    return type(cfg).__name__ if cfg is not None else type(base_model).__name__


def _refuse(what: str, config_name: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"model: this pack regulates the cross-attention of UNet diffusion models; the connected model "
        f"({config_name}) {what}. DiT/MMDiT models (SD3, Flux, PixArt, AuraFlow, HunyuanDiT, ...) have no "
        f"UNet cross-attention blocks and are not supported. Supported families: {supported_families_text()}. "
        "Load a checkpoint of one of these families."
    )


def discover_scheme(unet: Any, prediction: str = "epsilon", config_name: str = "model") -> SiteScheme:
    """Read the sites, their order, level and depth from a ComfyUI openaimodel UNetModel."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, UNetModel, Upsample

    if not isinstance(unet, UNetModel):
        raise _refuse(f"has a {type(unet).__name__} diffusion model, not a UNet", config_name)
    if type(unet) is not UNetModel:
        raise _refuse(f"has a {type(unet).__name__} (a video or other UNet variant)", config_name)

    sites: list[Site] = []
    transformers: list[Any] = []

    def attention_in(block: Any) -> list[Any]:
        return [m for m in block.modules() if isinstance(m, SpatialTransformer)]

    def has(block: Any, cls: type) -> bool:
        return any(isinstance(m, cls) for m in block.modules())

    def visit(key: SiteKey, block: Any, level: int) -> None:
        found = attention_in(block)
        if found:
            sites.append(Site(key, level, _depth(found)))
            transformers.extend(found)

    level = 0
    for i, block in enumerate(unet.input_blocks):
        visit(("input", i), block, level)
        level += has(block, Downsample)
    if unet.middle_block is not None:
        visit(("middle", 0), unet.middle_block, level)
    for i, block in enumerate(unet.output_blocks):
        visit(("output", i), block, level)
        level -= has(block, Upsample)
    if not sites:
        raise _refuse("is a UNet without attention blocks", config_name)
    if any(type(t) is not SpatialTransformer for t in transformers):
        raise _refuse("has temporal (video) transformer blocks", config_name)
    contexts = {_context_dim(t) for t in transformers}
    if None in contexts or len(contexts) != 1:
        raise _refuse("has no text cross-attention at some attention sites", config_name)
    family, native = _family(contexts.pop(), _adm_channels(unet), prediction, config_name)
    return SiteScheme(family=family, prediction=prediction, native_px=native, sites=tuple(sites))


def _depth(found: list[Any]) -> int:
    return sum(len(t.transformer_blocks) for t in found)


def _context_dim(transformer: Any) -> int | None:
    block = transformer.transformer_blocks[0]
    attn2 = getattr(block, "attn2", None)
    if attn2 is None or getattr(block, "switch_temporal_ca_to_sa", False):
        return None
    return int(attn2.to_k.in_features)


def _adm_channels(unet: Any) -> int | None:
    emb = getattr(unet, "label_emb", None)
    if emb is None:
        return None
    first = next((m for m in emb.modules() if hasattr(m, "in_features")), None)
    return int(first.in_features) if first is not None else -1


def _family(context_dim: int, adm: int | None, prediction: str, config_name: str) -> tuple[str, int]:
    if context_dim == 768 and adm is None:
        return "SD1.x", 512
    if context_dim == 1024 and adm is None:
        return "SD2.x", 768 if prediction == "v-prediction" else 512
    if context_dim == 2048 and adm == 2816:
        return "SDXL", 1024
    what = f"is a UNet with {context_dim}-wide text context" + (
        f" and {adm} extra conditioning channels" if adm else ""
    )
    raise _refuse(what + ", which matches none of the supported families", config_name)
