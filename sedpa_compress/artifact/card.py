"""The artifact's model card: Hub YAML metadata, what was done, and only measured numbers."""

from __future__ import annotations

from typing import Any

import yaml

from sedpa_compress.heads.pattern import HeadPattern


def card_metadata(config: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["sedpa", "duoattention", "svd", "long-context", "compressed"],
    }
    base = block.get("base_model")
    if base and "/" in str(base) and not str(base).startswith(("random:", "/", ".")):
        meta["base_model"] = base
    if block.get("license"):
        meta["license"] = block["license"]
    return meta


def render_card(config: dict[str, Any], block: dict[str, Any], pattern: HeadPattern | None) -> str:
    meta = card_metadata(config, block)
    m = block.get("metrics", {})
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {block.get('base_model', 'model')} — sedpa-compressed", "",
             "Compressed with [sedpa](https://pypi.org/project/sedpa-compress/): retrieval heads keep the full KV "
             "cache, streaming heads keep sink + recent tokens, and the streaming heads' q/k/v/o projections are "
             "activation-aware truncated SVD factors.", "", "## What was done", "",
             "| setting | value |", "| --- | --- |",
             f"| base model | `{block.get('base_model')}` (revision `{block.get('base_revision')}`) |",
             f"| scope | {block.get('scope')} |", f"| rank ratio | {block.get('rank_ratio')} |",
             f"| rank search | {block.get('rank_search')} |",
             f"| sink / recent | {block.get('sink')} / {block.get('recent')} |"]
    if pattern is not None:
        lines.append(f"| retrieval ratio | {pattern.actual_retrieval_ratio:.3f} "
                     f"({sum(map(sum, pattern.mask))} of {pattern.num_layers * pattern.num_kv_heads} KV heads) |")
    for key, label in (("params_before", "parameters before"), ("params_after", "parameters after"),
                       ("reduction", "parameter reduction"), ("calibration_ppl_before", "calibration perplexity before"),
                       ("calibration_ppl_after", "calibration perplexity after")):
        if key in m and m[key] is not None:
            value = f"{m[key]:.2%}" if key == "reduction" else (f"{m[key]:,}" if isinstance(m[key], int) else f"{m[key]:.4g}")
            lines.append(f"| {label} | {value} |")
    lines += ["", "## Use", "", "```bash", "pip install sedpa-compress",
              "sedpa generate --model THIS_DIR_OR_REPO --prompt-file long.txt", "```", "", "```python",
              "import sedpa_compress", "loaded = sedpa_compress.load(\"THIS_DIR_OR_REPO\")", "```", ""]
    return "\n".join(lines)
