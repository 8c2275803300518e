"""The engine's contract with a regulation module (docs/METHOD.md, "Engine").

A contribution is an immutable value installed at attention sites. The engine
asks it only what this protocol names: its ``kind`` (self- or cross-attention),
whether it acts on the cond branch only, its window, its ``role`` and, for the
role, either ``bias`` (an additive logit bias for one site call) or ``observe``
(a look at q, k and the final bias, changing nothing). A module that regulates
prompt words also names its ``prompt`` so the engine can check, before the
first step, that the sampler is conditioned on that very prompt.

Adding a module: one contribution class in cxr_core/attention/ that satisfies
:class:`BiasContribution` or :class:`ObserveContribution`, and one node file
that builds it and calls ``engine.install``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

import torch

from .schedule import Window
from .sites import SiteKey

if TYPE_CHECKING:
    from .prompt import RegulatedPrompt
    from .structured_bias import StructuredBias

Kind = Literal["attn1", "attn2"]
Role = Literal["bias", "observe"]
T = TypeVar("T")


def run_cached(cache: dict | None, key: tuple, make: Callable[[], T]) -> T:
    """``make()`` once per run under ``key`` in the run's cache (engine.RunState.cache); every time without one."""
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


@dataclass(frozen=True)
class SiteCall:
    """What a contribution needs to know about the attention call it biases or observes."""

    site: SiteKey
    kind: str  # "attn1" or "attn2"
    hw: tuple[int, int]  # the site's token grid
    n_q: int
    n_k: int
    batch: int  # batch items per cond/uncond chunk
    device: torch.device
    cache: dict | None = None  # per-run cache (engine.RunState), None outside a sampling run
    dtype: torch.dtype = torch.float32  # q's dtype: biases are built in it, never as an fp32 copy on the side

    def cached(self, key: tuple, make: Callable[[], T]) -> T:
        """``make()`` once per run for this call's grid, context length, device and dtype (see run_cached)."""
        return run_cached(self.cache, (*key, self.hw, self.n_k, str(self.device), self.dtype), make)


@runtime_checkable
class Contribution(Protocol):
    role: ClassVar[Role]
    label: ClassVar[str]  # the module's name in activity logs; "" = internal, not reported
    kind: Kind
    cond_only: bool
    window: Window
    prompt: RegulatedPrompt | None


class BiasContribution(Contribution, Protocol):
    def bias(self, call: SiteCall) -> torch.Tensor:
        """(Bm, Nq, Nk) additive logits for this call, Bm = 1 (broadcast) or one per batch item."""
        ...

    def structured(self, call: SiteCall) -> StructuredBias | None:
        """The same bias in a compact exact form (structured_bias.py), or None: the engine uses it when this
        contribution is the only one active at the call and nothing observes it."""
        ...


class ObserveContribution(Contribution, Protocol):
    def observe(
        self, call: SiteCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
        extra_options: dict,
    ) -> None:  # fmt: skip
        """See the call (q, k, v and the bias the engine assembled); must not change them."""
        ...


def require_contribution(contribution: object) -> Contribution:
    """Refuse, by name, an object that does not meet the protocol (a programming error, caught at install)."""
    missing = [
        a for a in ("role", "label", "kind", "cond_only", "window", "prompt") if not hasattr(contribution, a)
    ]
    role = getattr(contribution, "role", None)
    if not missing and role not in ("bias", "observe"):
        missing.append("role 'bias' or 'observe'")
    if not missing and not callable(getattr(contribution, role, None)):
        missing.append(f"method {role}()")
    if not missing and role == "bias" and not callable(getattr(contribution, "structured", None)):
        missing.append("method structured()")
    if not missing and contribution.kind not in ("attn1", "attn2"):
        missing.append("kind 'attn1' or 'attn2'")
    if missing:
        raise TypeError(
            f"{type(contribution).__name__} is not an attention contribution: lacks {', '.join(missing)}"
        )
    return contribution  # type: ignore[return-value]
