"""The artifact's model card: Hub YAML metadata, what was done, and only measured numbers.

`render_card` is pure (config + sedpa block + pattern + results in, Markdown out). `update_card`
re-renders `README.md` inside an existing artifact from the benchmark JSONs it is given (copied into
the artifact's `results/`), rewriting the manifest; the swap is atomic, so an interrupted update
leaves the old artifact as it was.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from sedpa_compress.artifact.safeio import CARD_METADATA_MAX, CONFIG_MAX, RESULT_MAX, read_json, safe_yaml
from sedpa_compress.errors import SedpaError
from sedpa_compress.heads.pattern import HeadPattern
from sedpa_compress.models.loaded import PATTERN_FILE, is_artifact_dir

CARD_FILE = "README.md"
RESULTS_DIR = "results"
PLACEHOLDER = "THIS_DIR_OR_REPO"
TAGS = ["sedpa", "duoattention", "svd", "long-context", "compressed"]
# Licence ids the Hub's metadata accepts as-is (the common ones for causal LMs); others become
# `license: other` + `license_name`, which the Hub also accepts.
HUB_LICENSES = {
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
    "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
    "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1",
    "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research",
    "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by", "odbl",
    "openmdw-1.0", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl",
    "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3", "llama3.1",
    "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other",
}


# ----------------------------------------------------------------------------------- metadata


def split_front_matter(text: str, source: str = "the model card") -> tuple[dict[str, Any] | None, str]:
    """(YAML metadata, body) of a Markdown card; metadata None when there is no valid front matter.

    Metadata with YAML aliases, or larger than 1 MiB, is a SedpaError naming `source`: expanding it
    could take all memory (an alias bomb)."""
    if not text.startswith("---"):
        return None, text
    end = text.find("\n---", 3)
    if end < 0:
        return None, text
    try:
        meta = safe_yaml(text[3:end], f"{source}'s metadata", "remove them from its front matter (write the values out)")
    except (yaml.YAMLError, RecursionError):
        return None, text
    body = text[end + 4:].lstrip("\n")
    return (meta if isinstance(meta, dict) else None), body


def base_license(path: Path | None) -> str | None:
    """The base model's licence from its README front matter or config.json, when the directory has one."""
    if path is None:
        return None
    path = Path(path)
    readme = path / CARD_FILE
    if readme.is_file():
        try:
            with readme.open("rb") as f:  # only the front matter matters: never the whole of a huge card
                head = f.read(CARD_METADATA_MAX + 8).decode("utf-8", errors="replace")
        except OSError:
            head = ""
        if head.startswith("---") and head.find("\n---", 3) < 0 and len(head) > CARD_METADATA_MAX:
            raise SedpaError(f"{readme}: its metadata (front matter) is larger than {CARD_METADATA_MAX >> 20} MiB: "
                             "shorten it, or remove the base model's README.md")
        meta, _ = split_front_matter(head, source=str(readme))
        if meta and meta.get("license"):
            lic = str(meta["license"]).strip()
            if lic == "other" and meta.get("license_name"):
                return f"other:{meta['license_name']}"
            return lic
    cfg = path / "config.json"
    if cfg.is_file():
        try:
            value = read_json(cfg, limit=CONFIG_MAX, what="config", fix="").get("license")
        except (SedpaError, AttributeError):  # the loader has said what is wrong with it, or will
            value = None
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _license_fields(value: str) -> dict[str, str]:
    lic = value.strip().lower()
    if lic.startswith("other:"):
        return {"license": "other", "license_name": _slug(value.split(":", 1)[1])}
    if lic in HUB_LICENSES:
        return {"license": lic}
    return {"license": "other", "license_name": _slug(value)}


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in ".-" else "-" for c in text.strip().lower()).strip("-")
    return out or "unknown"


def _hub_base_model(block: dict[str, Any]) -> str | None:
    base = str(block.get("base_model") or "")
    parts = base.split("/")
    if len(parts) == 2 and all(parts) and not base.startswith(("random:", "/", ".", "~")):
        return base
    return None


def card_metadata(config: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """The README's YAML header, in the keys the Hub reads."""
    meta: dict[str, Any] = {}
    base = _hub_base_model(block)
    if base:
        meta["base_model"] = base
    if block.get("license"):
        meta.update(_license_fields(str(block["license"])))
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    tags = list(TAGS)
    if config.get("model_type"):
        tags.append(str(config["model_type"]))
    meta["tags"] = tags
    return meta


# ----------------------------------------------------------------------------------- results


@dataclass
class CardResult:
    """One benchmark JSON as found in the artifact's `results/` (name relative to the artifact)."""

    name: str
    data: dict[str, Any]
    images: list[str]


def check_result(data: Any, source: str) -> dict[str, Any]:
    """The ARCHITECTURE.md shape, or a one-line SedpaError naming the file."""
    if not isinstance(data, dict) or not isinstance(data.get("benchmark"), str):
        raise SedpaError(f"{source} is not a sedpa benchmark result (no `benchmark` field): pass a JSON written by `sedpa bench`")
    if not isinstance(data.get("rows", []), list) or not isinstance(data.get("summary", {}), dict):
        raise SedpaError(f"{source}: `rows` must be a list and `summary` an object; pass a JSON written by `sedpa bench`")
    return data


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:.4g}"
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def _table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c.replace("|", "\\|") for c in row) + " |"
              for row in rows]
    return lines


MAX_ROWS = 40


def result_section(result: CardResult) -> list[str]:
    """A benchmark JSON as Markdown: provenance line, the per-mode summary table, else the rows."""
    d = result.data
    lines = [f"### {d['benchmark']}", ""]
    prov = [f"model `{d.get('model')}`", f"device {d.get('device')}"]
    if d.get("created"):
        prov.append(f"run {d['created']}")
    if d.get("git_commit"):
        prov.append(f"sedpa commit `{str(d['git_commit'])[:10]}`")
    lines += ["; ".join(prov) + f" ([`{result.name}`]({result.name}))", ""]
    if d.get("command"):
        lines += [f"Command: `{d['command']}`", ""]
    settings = d.get("settings") or {}
    if isinstance(settings, dict) and settings:
        shown = [f"{k}={_fmt(v)}" for k, v in settings.items() if not isinstance(v, dict)]
        if shown:
            lines += ["Settings: " + ", ".join(shown), ""]
    summary = d.get("summary") or {}
    if summary:
        metrics: list[str] = []
        for values in summary.values():
            for k in (values if isinstance(values, dict) else {}):
                if k not in metrics:
                    metrics.append(k)
        lines += _table(["mode", *metrics], ([mode, *[(v or {}).get(k) if isinstance(v, dict) else None
                                                      for k in metrics]] for mode, v in summary.items()))
    else:
        rows = [r for r in d.get("rows", []) if isinstance(r, dict)]
        cols: list[str] = []
        for r in rows[:MAX_ROWS]:
            cols += [k for k in r if k not in cols]
        lines += _table(cols, ([r.get(c) for c in cols] for r in rows[:MAX_ROWS]))
        if len(rows) > MAX_ROWS:
            lines += ["", f"({len(rows) - MAX_ROWS} more rows in [`{result.name}`]({result.name}))"]
    for image in result.images:
        lines += ["", f"![{Path(image).stem}]({image})"]
    lines.append("")
    return lines


def find_results(artifact: Path) -> list[CardResult]:
    """Every benchmark JSON in `<artifact>/results/`, with the PNGs that share its stem."""
    folder = Path(artifact) / RESULTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        data = check_result(read_json(path, limit=RESULT_MAX, what="benchmark result",
                                      fix="remove it or re-run `sedpa card`"), str(path))
        images = sorted(f"{RESULTS_DIR}/{p.name}" for p in folder.glob(f"{path.stem}*.png"))
        found.append(CardResult(name=f"{RESULTS_DIR}/{path.name}", data=data, images=images))
    return found


# ----------------------------------------------------------------------------------- rendering


def _method(block: dict[str, Any]) -> str:
    scope = block.get("scope")
    if block.get("pattern") is None:
        return "activation-aware truncated SVD of every head's q/k/v/o projections (no head pattern)"
    what = ("SEDPA-S dual path: retrieval heads keep full-rank projections, streaming heads' q/k/v rows and o_proj "
            "columns are activation-aware truncated SVD factors") if scope == "streaming" else (
        "DuoAttention head pattern + activation-aware truncated SVD of every head's q/k/v/o projections")
    if block.get("window"):
        what += f"; SEDPA-W window {block['window']} recorded"
    return what


def render_card(config: dict[str, Any], block: dict[str, Any], pattern: HeadPattern | None, *,
                heatmap: str | None = None, results: list[CardResult] | None = None,
                repo_id: str | None = None) -> str:
    """The whole README.md. Every number comes from the artifact's metrics or a measured result JSON."""
    meta = card_metadata(config, block)
    m = block.get("metrics", {}) or {}
    where = repo_id or PLACEHOLDER
    base = str(block.get("base_model", "model"))
    short = base if _hub_base_model(block) else Path(base).name or base
    revision = f" (revision `{block['base_revision']}`)" if block.get("base_revision") else ""
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {repo_id or short + '-sedpa'}: sedpa-compressed {short}", "",
             "Compressed with [sedpa](https://pypi.org/project/sedpa-compress/): retrieval heads keep the full KV "
             "cache, streaming heads keep sink + recent tokens, and the streaming heads' q/k/v/o projections are "
             "activation-aware truncated SVD factors.", "", "## What was done", "",
             "| setting | value |", "| --- | --- |",
             f"| method | {_method(block)} |",
             f"| base model | `{base}`{revision} |",
             f"| scope | {block.get('scope')} |", f"| rank ratio | {block.get('rank_ratio')} |",
             f"| rank search | {block.get('rank_search')} |",
             f"| sink / recent | {block.get('sink')} / {block.get('recent')} |"]
    if block.get("window"):
        lines.append(f"| window (SEDPA-W) | {block['window']} |")
    if pattern is not None:
        lines.append(f"| retrieval ratio | {pattern.actual_retrieval_ratio:.3f} "
                     f"({sum(map(sum, pattern.mask))} of {pattern.num_layers * pattern.num_kv_heads} KV heads) |")
    elif isinstance(block.get("pattern"), dict):
        p = block["pattern"]
        lines.append(f"| retrieval ratio | {p.get('retrieval_ratio')} ({p.get('retrieval_heads')} retrieval, "
                     f"{p.get('streaming_heads')} streaming KV heads) |")
    projections = block.get("projections") or {}
    if projections:
        ranks = [p.get("rank") for p in projections.values() if isinstance(p, dict)]
        lines.append(f"| compressed projections | {len(projections)} (ranks {min(ranks)}–{max(ranks)}) |")
    cal = block.get("calibration") or {}
    if isinstance(cal, dict) and cal.get("tokens"):
        lines.append(f"| calibration | {_fmt(cal.get('tokens'))} tokens of {_fmt(cal.get('source'))} |")
    for key, label in (("params_before", "parameters before"), ("params_after", "parameters after"),
                       ("reduction", "parameter reduction"), ("calibration_ppl_before", "calibration perplexity before"),
                       ("calibration_ppl_after", "calibration perplexity after")):
        if key in m and m[key] is not None:
            value = f"{m[key]:.2%}" if key == "reduction" else _fmt(m[key])
            lines.append(f"| {label} | {value} |")
    if m.get("ppl_note") and m.get("calibration_ppl_after") is not None:
        lines += ["", f"Perplexity: {m['ppl_note']}."]
    if heatmap:
        lines += ["", "## Head pattern", "",
                  f"![retrieval and streaming heads]({heatmap})", "",
                  "Gate per (layer, KV head); marked cells are retrieval heads (full KV cache), the others stream "
                  f"(sink {block.get('sink')} + recent {block.get('recent')} tokens). Pattern file: `sedpa_pattern.json`."]
    if results:
        lines += ["", "## Measured results", ""]
        from sedpa_compress.bench.report import tradeoff_from_results

        table = tradeoff_from_results([(r.name, r.data) for r in results])
        if table:  # the SEDPA paper's trade-off view first: accuracy, perplexity and cost per mode
            lines += [table.rstrip(), ""]
        for r in results:
            lines += result_section(r)
    lines += ["", "## Use", "",
              "With sedpa (the runtime with the head pattern: streaming heads keep only sink + recent tokens):", "",
              "```bash", "pip install sedpa-compress",
              f"sedpa pull {where}" if repo_id else f"sedpa generate --model {where} --prompt-file long.txt",
              *([f"sedpa generate --model {where} --attention sedpa-s --prompt-file long.txt"] if repo_id else []),
              "```", "", "```python", "import sedpa_compress", "",
              f"loaded = sedpa_compress.load(\"{where}\")  # .model, .tokenizer, .artifact", "```", "",
              "With transformers alone (low-rank projections, transformers' own full attention: same logits as "
              "`sedpa_compress.load` under full attention, without the KV-cache savings):", "",
              "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              "revision = \"COMMIT_ID\"  # the commit whose modeling_sedpa.py you read (the repo's history)",
              f"model = AutoModelForCausalLM.from_pretrained(\"{where}\", trust_remote_code=True, revision=revision)",
              f"tokenizer = AutoTokenizer.from_pretrained(\"{where}\", revision=revision)", "```", "",
              "`trust_remote_code=True` runs the repo's `modeling_sedpa.py` on your machine: read it, and pin "
              "`revision` to the commit you read, so that a later push cannot change the code you run. "
              "sedpa itself never runs code from an artifact.", "",
              "`manifest.json` lists the sha256 of every file; sedpa checks it before loading.", ""]
    return "\n".join(lines)


def render_artifact_card(artifact: Path, *, repo_id: str | None = None) -> str:
    """README.md for an artifact as it is on disk: its config, pattern, heatmap and `results/`."""
    from sedpa_compress.artifact.heatmap import HEATMAP_FILE
    from sedpa_compress.artifact.reader import read_sedpa_block

    artifact = Path(artifact)
    config, block = read_sedpa_block(artifact)
    pattern = HeadPattern.load(artifact / PATTERN_FILE) if (artifact / PATTERN_FILE).is_file() else None
    heatmap = HEATMAP_FILE if (artifact / HEATMAP_FILE).is_file() else None
    return render_card(config, block, pattern, heatmap=heatmap, results=find_results(artifact), repo_id=repo_id)


# ----------------------------------------------------------------------------------- updating


def stage_artifact(artifact: Path, staging: Path, manifest: dict) -> None:
    """Put exactly the manifest's files into the empty `staging`, as regular files, each checked
    against its sha256 there: what `sedpa card` swaps in and `sedpa push` uploads is what the
    manifest vouches for, never a file it does not list and never a symlink's target outside.

    Hard links (instant for multi-GB weights) to each file's real path, which is inside the artifact
    or, for a Hub cache snapshot, its blobs/; a copy where links fail (another filesystem).
    """
    from sedpa_compress.artifact.manifest import MANIFEST, artifact_file, check_entry

    for name, info in manifest["files"].items():
        src = artifact_file(artifact, name)
        if src is None:
            raise SedpaError(f"{Path(artifact) / MANIFEST} lists {name!r}, outside the artifact: refusing to read it")
        real = src.resolve()
        dst = Path(staging) / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(real, dst, follow_symlinks=False)  # a symlink swapped in since is linked as a link: refused below
        except OSError:
            _copy_no_follow(real, dst)
        check_entry(staging, name, info)


def _copy_no_follow(src: Path, dst: Path) -> None:
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fin, open(dst, "xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)


def add_results(staging: Path, results: list[Path]) -> list[str]:
    """Copy benchmark JSONs (and the PNGs beside them that share their stem) into `staging/results/`."""
    from sedpa_compress.atomic import atomic_write_bytes

    added = []
    for path in results:
        path = Path(path)
        if not path.is_file():
            raise SedpaError(f"--results {path} does not exist: pass a JSON written by `sedpa bench`")
        check_result(read_json(path, limit=RESULT_MAX, what="--results", fix="pass a JSON written by `sedpa bench`"),
                     str(path))
        folder = staging / RESULTS_DIR
        folder.mkdir(exist_ok=True)
        for src in [path, *sorted(path.parent.glob(f"{path.stem}*.png"))]:
            target = folder / src.name
            if target.exists() or target.is_symlink():
                target.unlink()  # a hard link shared with the live artifact: replace, never write through it
            atomic_write_bytes(target, src.read_bytes())
            added.append(f"{RESULTS_DIR}/{src.name}")
    return added


def write_card(staging: Path, *, manifest: dict, added: list[str] = (), repo_id: str | None = None) -> dict:
    """Re-render README.md in a staged artifact and rewrite its manifest; returns the new manifest.

    The new manifest lists the old manifest's files (already verified in `staging`), the card and the
    `added` result files: only what sedpa verified or wrote itself, whatever else is in the folder.
    """
    from sedpa_compress.artifact.manifest import file_entry, write_manifest
    from sedpa_compress.atomic import atomic_write_text

    text = render_artifact_card(staging, repo_id=repo_id)
    readme = staging / CARD_FILE
    old = readme.read_text(encoding="utf-8") if readme.is_file() else None
    if old != text:
        readme.unlink(missing_ok=True)  # break the hard link before writing
        atomic_write_text(readme, text)
    entries = dict(manifest["files"])
    for name in [*added, CARD_FILE]:
        entries[name] = file_entry(staging / name)
    (staging / "manifest.json").unlink(missing_ok=True)  # a hard link into the live artifact: never write through it
    return write_manifest(staging, entries)


@dataclass
class CardUpdate:
    artifact: Path
    added: list[str]
    results: int


def update_card(artifact: Path, results: list[Path]) -> CardUpdate:
    """`sedpa card ART --results ...`: add results, re-render README.md, rewrite manifest.json, atomically."""
    from sedpa_compress.artifact.manifest import verify_manifest
    from sedpa_compress.atomic import atomic_directory

    artifact = Path(artifact)
    if not artifact.is_dir() or not is_artifact_dir(artifact):
        raise SedpaError(f"{artifact} is not a sedpa artifact directory (no config.json with a `sedpa` block): "
                         "pass the --out of `sedpa compress`")
    manifest = verify_manifest(artifact)  # never bless a corrupted artifact, or a stray file, with a fresh manifest
    with atomic_directory(artifact, overwrite=True) as staging:
        stage_artifact(artifact, staging, manifest)
        added = add_results(staging, results)
        write_card(staging, manifest=manifest, added=added)
        count = len(find_results(staging))
    return CardUpdate(artifact=artifact, added=added, results=count)
