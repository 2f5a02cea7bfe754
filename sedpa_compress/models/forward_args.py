"""The keyword arguments a transformers forward takes its KV cache (and positions) under.

transformers 5.x renamed `past_key_values` to `cache` (5.24 warns on the old name, 5.40 drops it) and dropped
`cache_position` from most forwards; the device and CI may hold different 5.x releases, so callers ask the
model's own signature instead of pinning one spelling.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


class ForwardArgs:
    """The cache (and positions) under the names this transformers version's forward takes: `cache` or
    `past_key_values`; `cache_position` where the forward still has it. Looked up once, so neither a timed step
    nor a compiled one inspects signatures."""

    def __init__(self, model: torch.nn.Module) -> None:
        params = inspect.signature(model.forward).parameters
        self.cache_name = "cache" if "cache" in params else "past_key_values"
        self.cache_position = "cache_position" in params

    def __call__(self, cache: Any, positions: torch.Tensor | None = None) -> dict[str, Any]:
        kw: dict[str, Any] = {self.cache_name: cache, "use_cache": True}
        if positions is not None:
            kw["position_ids"] = positions[None]
            if self.cache_position:
                kw["cache_position"] = positions
        return kw
