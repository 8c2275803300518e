"""The pack's torch-free modules that the runner shares: the metric registry and file locking.

Both live in ``cxr_core/metrics/`` and import nothing but the standard library and
``filelock``. In a checkout (ComfyUI's ``custom_nodes``, or tests importing it as
``cxr_pack``, see scripts/import_pack.py) the runner sits beside ``cxr_core`` in one
package; installed with ``pip install .`` both are top-level packages.
"""

from __future__ import annotations

if __package__ and "." in __package__:  # cxr_pack.cxr_runner: the whole checkout is one package
    from ..cxr_core.metrics import locking, registry
else:  # cxr_runner installed (or run from the checkout's folder): cxr_core is a top-level package
    from cxr_core.metrics import locking, registry

__all__ = ["locking", "registry"]
