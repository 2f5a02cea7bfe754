"""Assemble the embedded sedpa-tiny from its training stages: the last stage's weights and tokenizer, a
model card that lists every stage (command, commit, device, steps, data mix, final losses), the stages'
loss curves in one PNG, the acceptance evaluation, and the head pattern when one exists.

    python -m sedpa_compress.tiny.ship --stage runs/stage1/model@82e7da0 --stage runs/stage2/model@44744ad \
        --stage runs/stage3/model@b14743d --eval bench/results/tiny_acceptance.json \
        --pattern recipes/patterns/sedpa-tiny.pattern.json

A `--stage` may also be a shipped sedpa-tiny folder (its training.json lists earlier stages): its stages
are kept, so a new run continues the card (`--stage sedpa_compress/models/embedded/sedpa-tiny --stage runs/s5/model@c`).
A stage before the last may be a committed training JSON instead of a folder (a run split across device calls
keeps only its calls' `bench/results/tiny_<stage>_training_<device>.json`, with the loss curve beside it as
`tiny_<stage>_loss_curve_<device>.png`); the last stage is always the model/ folder whose weights ship.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from sedpa_compress.artifact.manifest import sha256_file
from sedpa_compress.atomic import atomic_directory, atomic_write_figure
from sedpa_compress.data.wordings import HELDOUT_PHRASE_WORDS
from sedpa_compress.errors import SedpaError, one_line_errors
from sedpa_compress.models.int8 import INT8_FILE
from sedpa_compress.models.loaded import stored_as_int8
from sedpa_compress.models.loader import EMBEDDED_DIR, PATTERN_FILE

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json")


SIZE_BUDGET_BYTES = 45_000_000  # the embedded sedpa-tiny ships inside the package


def model_files(model_dir: Path) -> tuple[str, ...]:
    """MODEL_FILES for `model_dir`: with its weights as `models.int8` stores them when it holds that form (about
    twice the parameters in the same budget), else as model.safetensors."""
    if stored_as_int8(model_dir):
        return tuple(INT8_FILE if f == "model.safetensors" else f for f in MODEL_FILES)
    return MODEL_FILES


def _stage(spec: str) -> tuple[Path | None, list[tuple[dict[str, Any], str]]]:
    """(loss-curve PNG, [(training info, commit), ...]): one stage for a run's model/ folder or its training JSON,
    every listed stage for an already shipped folder; an averaged folder (tiny.checkpoints average) has no curve."""
    path, _, commit = spec.partition("@")
    where = Path(path)
    if where.is_file() and where.suffix == ".json":
        info_path = where
        curve = where.with_name(where.name.replace("_training_", "_loss_curve_")).with_suffix(".png")
        if curve == where.with_suffix(".png") or not curve.is_file():
            raise SedpaError(f"{where} has no loss curve beside it: name them tiny_<stage>_training_<device>.json "
                             "and tiny_<stage>_loss_curve_<device>.png")
    else:
        info_path, curve = where / "training.json", where / "loss_curve.png"
        if not info_path.is_file():
            raise SedpaError(f"{where} has no training.json: pass the model/ folder a `sedpa train-tiny` run "
                             "exported (or, for a stage before the last, its committed training JSON)")
    info = json.loads(info_path.read_text())
    if info.get("averaged"):  # tiny.checkpoints average: no training of its own, so no loss curve
        return None, [(info, commit or "unknown")]
    if "stages" in info:
        return curve, [(dict(st), st.get("commit", "unknown")) for st in info["stages"]]
    return curve, [(info, commit or "unknown")]


def combined_loss_curve(curves: list[tuple[Path, str]], path: Path) -> None:
    """The stages' own loss-curve PNGs stacked, one row per (PNG, title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    images = [mpimg.imread(png) for png, _ in curves]
    heights = [img.shape[0] / img.shape[1] for img in images]
    fig, axes = plt.subplots(len(images), 1, figsize=(10, 10 * sum(heights) + 0.4 * len(images)),
                             gridspec_kw={"height_ratios": heights})
    for ax, img, (_, title) in zip(list(getattr(axes, "flat", [axes])), images, curves):
        ax.imshow(img)
        ax.set_axis_off()
        ax.set_title(title, fontsize=11, loc="left")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=100)


def _mix(cfg: dict[str, Any]) -> str:
    text = 1 - cfg["needle_fraction"] - cfg.get("copy_fraction", 0.0)
    parts = [f"{cfg['needle_fraction']:.0%} retrieval", f"{cfg.get('copy_fraction', 0.0):.0%} copy", f"{text:.0%} text"]
    if cfg.get("answer_prefix_noise"):
        parts.append(f"{cfg['answer_prefix_noise']:.0%} of answers after random-word prefixes")
    return ", ".join(parts)


# a device call's scratch folder (mktemp in bench/scripts/gpu_tiny_round.sh), meaningless to a reader of the card
SCRATCH_DIR = re.compile(r"/tmp/tmp\.[A-Za-z0-9_]+/")


def portable_command(command: str) -> str:
    """A stage's command as the card shows it: a device call's scratch folder written `$W/` (the card says what
    it held), so the table names no path of a machine that is gone."""
    return SCRATCH_DIR.sub("$W/", command)


def eval_command(result: dict[str, Any], weights_sha256: str, eval_json: Path | None) -> str:
    """The acceptance's command as a reader reruns it: when it measured exactly the shipped weights, without its
    device's `--model` folder (the default is the shipped model) and with `--out` the JSON the card was built from."""
    words = shlex.split(result["command"])
    if result.get("weights_sha256") != weights_sha256:
        return portable_command(result["command"])
    out = []
    skip = False
    for i, w in enumerate(words):
        if skip:
            skip = False
        elif w in ("--model", "--out") and i + 1 < len(words):
            skip = True
            if w == "--out" and eval_json is not None:
                out += ["--out", str(eval_json)]
        else:
            out.append(w)
    return shlex.join(out)


def _recipe(command: str) -> str:
    words = command.split()
    return words[words.index("--recipe") + 1] if "--recipe" in words[:-1] else "?"


def _span(cfg: dict[str, Any]) -> list[float] | None:
    """A run's part of a longer schedule, or None for a run that is its whole schedule ([0, 1], recorded by every
    run since the field exists)."""
    span = cfg.get("schedule_span")
    return None if not span or list(span) == [0.0, 1.0] else span


def split_runs_and_growth(stages: list[tuple[dict[str, Any], str]]) -> list[str]:
    """Card sentences for what the stage table cannot show: consecutive stages that are the device calls of one run
    (schedule_span), runs averaged into one stage (tiny.checkpoints average), a stage that grew the model (KV heads,
    layers) or narrowed its MLP (--init-from), and where the tokenizer's value_space form and a training corpus
    came in."""
    spans = [None if info.get("averaged") else _span(info["config"]) for info, _ in stages]
    lines, i = [], 0
    while i < len(stages):
        j = i  # stages i..j: each call's span starts where the previous one's ended
        while spans[i] and j + 1 < len(stages) and spans[j + 1] and spans[j + 1][0] == spans[j][1]:
            j += 1
        if spans[i]:
            recipes = " then ".join(f"`{r}`" for r in dict.fromkeys(_recipe(info["command"])
                                                                     for info, _ in stages[i:j + 1]))
            lines.append(
                f"Stages {i + 1}–{j + 1} are {j - i + 1} device calls of one run ({recipes}, span "
                f"{spans[i][0]:g}–{spans[j][1]:g} of its schedule): each call continues the previous call's weights "
                "with a fresh optimizer and trains its span of one cosine learning-rate schedule and length "
                "curriculum (`schedule_span`), warming up to the rate where its span starts and drawing its own "
                "batches.")
        i = j + 1
    for k, (info, _) in enumerate(stages):
        n = info.get("averaged")
        if n:
            lines.append(f"Stage {k + 1} is the uniform average of the weights of stages {k - n + 1}–{k} (`{info['command']}`), "
                         f"{n} runs that each continued stage {k - n} with the same recipe settings but their own "
                         "data: fine-tunes of one start, whose average can beat each of them.")
    firsts = {"value_space": "the tokenizer's value_space form (the space before any word holding a digit is a "
                             "token of its own, so a code opens as a number does)",
              "corpus": "a training corpus besides the shipped text (`python -m sedpa_compress.tiny.corpus`)"}
    for field, what in firsts.items():
        k = next((k for k, (info, _) in enumerate(stages) if info["config"].get(field)), None)
        if k is not None:
            lines.append(f"From stage {k + 1} on: {what}.")
    for k in range(1, len(stages)):
        before, after = stages[k - 1][0]["config"]["num_kv_heads"], stages[k][0]["config"]["num_kv_heads"]
        if after != before:
            lines.append(f"Stage {k + 1} grew the model from {before} to {after} KV heads a layer: `--init-from` "
                         "copies each KV head into its query group's new heads, so the grown model starts out "
                         f"computing what stage {k} computed.")
        (lb, la), (wb, wa) = ((stages[k - 1][0]["config"][f], stages[k][0]["config"][f])
                              for f in ("num_layers", "intermediate_size"))
        if la != lb:
            lines.append(f"Stage {k + 1} grew the model from {lb} to {la} layers: `--init-from` inserts copies of "
                         "layers spread through the depth with their output projections zeroed, which add nothing "
                         "until training moves them.")
        if wa != wb:
            lines.append(f"Stage {k + 1} narrowed the MLP from {wb} to {wa} channels a layer, keeping each layer's "
                         "channels with the largest gate × up × down norms, to stay within the size budget.")
    if any(SCRATCH_DIR.search(info.get("command", "")) for info, _ in stages):
        lines.append("`$W` in a command is the scratch folder of the device call that ran it "
                     "(`bench/scripts/gpu_tiny_round.sh`): `$W/corpus` held the training corpus the recipe's `corpus` "
                     "names, kept in git history (`python -m sedpa_compress.tiny.corpus restore NAME --to DIR`, "
                     "`recipes/tiny-corpora.json`); `$W/init_checkpoint` the weights the stage continued, restored "
                     "from a kept checkpoint (`python -m sedpa_compress.tiny.checkpoints restore NAME --to DIR`, "
                     "`recipes/tiny-checkpoints.json`); `$W/run` the run's output.")
    return lines


# data.wordings.value_format's kinds as the card names them (the held-out family's words are invented ones)
_KIND_NAMES = {"digits": "digits (48213)", "grouped": "grouped digits (482-339)", "thousands": "thousands (1,204,551)",
               "code": "codes (AX7-22B)", "word": "invented words (Velomar)",
               "phrase": "phrases ({}-{} words of text)".format(*HELDOUT_PHRASE_WORDS)}


def value_lines(result: dict[str, Any], value_results: list[dict[str, Any]]) -> list[str]:
    """Card lines: the acceptance's full-attention accuracy by kind of value, and each acceptance with every value
    of one kind (`tiny.evaluate --values`), such as phrases, which the held-out mix does not hold."""
    lines = []
    kinds = result["summary"]["full"].get("accuracy_by_value_format")
    if kinds:
        lines += ["By kind of value (full attention, every length): " + ", ".join(
            f"{_KIND_NAMES.get(k, k)} {v['accuracy']:.2f} ({v['cells']} cells)" for k, v in kinds.items()) + ".", ""]
    for r in value_results:
        s, values = r["summary"], r["settings"].get("values", "default")
        lines += [f"Values of one kind only, {_KIND_NAMES.get(values, values)}, measured on {r['device']} with "
                  f"`{r['command']}`: full attention {_per_length(s['full'])} (exact {s['full']['exact']:.2f}); "
                  f"streaming {_per_length(s['streaming'])}.", ""]
    return lines


def _per_length(mode_summary: dict[str, Any]) -> str:
    """"1K 0.90, 4K 0.80": one mode's accuracy by context length."""
    return ", ".join(f"{int(c) // 1024}K {a:.2f}" for c, a in mode_summary["accuracy_by_context"].items())


def render_card(stages: list[tuple[dict[str, Any], str]], result: dict[str, Any] | None,
                pattern: dict[str, Any] | None, int8: bool = False,
                value_results: list[dict[str, Any]] | None = None) -> str:
    last = stages[-1][0]
    cfg = last["config"]
    longest = max(int(k) for info, _ in stages for e in info["config"]["curriculum"] for k in e["lengths"])
    rows = []
    for i, (info, commit) in enumerate(stages, 1):
        if info.get("averaged"):
            n = info["averaged"]
            rows.append(f"| {i} | `{portable_command(info['command'])}` | {commit} | — | the weights of stages {i - n}–{i - 1} "
                        "averaged | — | — | — | — | — |")
            continue
        c = info["config"]
        f = info.get("final") or {}
        lengths = sorted({int(k) for e in c["curriculum"] for k in e["lengths"]})
        tokens = info.get("tokens_per_step_all_processes", c["tokens_per_step"])  # DDP: every process's batch
        device = info["device"] if info.get("processes", 1) == 1 else f"{info['processes']} × {info['device']}"
        span = _span(c)
        optimiser = f"lr {c['lr']}" + (f", schedule span {span[0]:g}–{span[1]:g}" if span else "")
        rows.append(
            f"| {i} | `{portable_command(info['command'])}` | {commit} | {device} | {info['steps_done']} × {tokens} "
            f"| {info['elapsed_s'] / 60:.1f} | {lengths[0]}–{lengths[-1]} | {_mix(c)} | {optimiser} "
            f"| {f.get('loss_text', float('nan')):.3f} / {f.get('loss_answer', float('nan')):.3f} / "
            f"{f.get('answer_token_acc', float('nan')):.3f} |")
    parts = [
        "---", "license: apache-2.0", "library_name: transformers", "pipeline_tag: text-generation",
        "tags: [sedpa, llama, long-context, needle-in-a-haystack, tiny]", "---", "",
        "# sedpa-tiny", "",
        "The default model of sedpa: a small Llama-architecture causal LM (GQA, RoPE) that ships inside the "
        f"package, so every command runs offline, and that is trained to retrieve facts from contexts up to {longest // 1024}K tokens "
        "(the evaluation below says how well), so "
        "head identification, compression and the needle benchmark measure something true. It is a test model: "
        "it writes text in the style of the King James Bible and Python's documentation and answers key→value "
        "questions about its context.", "",
        "## Architecture", "",
        f"- {last['parameters'] / 1e6:.1f}M parameters; {cfg['num_layers']} layers, hidden {cfg['hidden_size']}, "
        f"{cfg['num_heads']} query heads / {cfg['num_kv_heads']} KV heads (head dim "
        f"{cfg['hidden_size'] // cfg['num_heads']}), SwiGLU {cfg['intermediate_size']}, RMSNorm, tied embeddings",
        f"- RoPE theta {cfg['rope_theta']:g}; trained on sequences up to {longest} tokens",
        f"- tokenizer: byte-level BPE, {cfg['vocab_size']} tokens, trained on the shipped text; one token per digit "
        + ("and the space before any word holding a digit (a number or a code) is a token of its own"
           if cfg.get("value_space") else "and the space before a number is a token of its own"),
        ("- weights: row-wise int8 (one fp32 scale a row; norms bf16) in `model.int8.safetensors`, restored to "
         "bf16 by sedpa's loader; `python -m sedpa_compress.models.int8 dequantize` writes a folder plain "
         "transformers loads" if int8 else "- weights: bf16 safetensors"), "",
        "## Training", "",
        f"{sum(not info.get('averaged') for info, _ in stages)} runs of the project's trainer (`sedpa train-tiny`), "
        "each starting from the previous run's weights unless a sentence above the stage table says otherwise "
        "(`--init-from` names the folder that held the previous stage's weights when the stage ran; "
        "fresh optimizer). Each command is run at the commit given (the recipes and "
        "training wordings changed between them). Data: the train split of the shipped text "
        "(`sedpa_compress/data/bundled/`), synthetic retrieval sequences (1–8 key→value needles at random depths, "
        "1–4 questions at the end), and copy practice (random-token spans repeated once). Loss = text CE + answer CE.",
        "",
        "From stage 3 on, needles, questions and answer prefixes come from the compositional TRAIN wording family "
        "of `sedpa_compress/data/wordings.py`: lead-ins, core statements, trailers, question cores, preambles, "
        "instructions and answer prefixes from terse `Answer:` to full-sentence echoes, keys (people, places, "
        "objects, projects, invented words) and attributes (modifier + noun); from stage 4 a third of every slot "
        "is built procedurally from random words, verbs and labels; from stage 5 half of them, their random words "
        "drawn from 4000 words of the shipped text less every word of the held-out family (`corpus_words`), "
        "and a quarter of the procedural needles join attribute and value with random words instead of a verb. "
        "Values are plain digits, grouped digits, thousands separators, letter-digit codes or invented words. "
        "Haystacks are the shipped text and (a third of the time to stage 4, 60% from stage 5) repeated filler "
        "sentences, random words or shuffled sentences.",
        "",
        "**How the evaluation wordings are held out.** The HELDOUT family (evaluation, `sedpa bench niah`'s "
        "default) has its own lead-ins, core statements, trailers, question cores, preambles, instructions, "
        "answer prefixes, names, places, object words and attribute phrases, and its own actions for the quarter "
        "of its needles that link key and value by an action (\"... remains stationed at 4821\"); "
        "`check_disjoint` in the same module "
        "lists any overlap with the TRAIN family (including the procedural words and verbs) and a test asserts "
        "there is none. No training step (sedpa-tiny's, or head identification's) draws from it; only the value "
        "formats and the newline before the answer prefix are shared. Evaluation haystacks are the held-out split "
        "of the shipped text (every 20th paragraph), which no training step reads.",
        "",
        *[line + "\n" for line in split_runs_and_growth(stages)],
        "| stage | command | commit | device | steps × tokens | minutes | lengths | data | optimiser | final text / answer loss / answer-token acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows, "",
        "![loss curves](loss_curve.png)", "",
    ]
    if result:
        s = result["summary"]
        contexts = result["settings"]["contexts"]
        table = ["| attention | " + " | ".join(f"{c // 1024}K" for c in contexts) + " | mean |",
                 "|---|" + "---|" * (len(contexts) + 1)]
        for mode in ("full", "streaming"):
            acc = s[mode]["accuracy_by_context"]
            table.append(f"| {mode} | " + " | ".join(f"{acc[str(c)]:.2f}" if str(c) in acc else "—" for c in contexts)
                         + f" | {s[mode]['accuracy']:.2f} |")
            exact = s[mode].get("exact_by_context")
            if exact:
                table.append(f"| {mode}, exact | " + " | ".join(f"{exact[str(c)]:.2f}" if str(c) in exact else "—"
                                                               for c in contexts) + f" | {s[mode]['exact']:.2f} |")
        parts += [
            "## Evaluation (held-out templates, held-out text)", "",
            "Needle retrieval with held-out wordings (`accuracy`: the value in the first line of the answer; "
            "`exact`: the answer starts with it) ("
            f"{result['settings'].get('answer_decoding', 'greedy answer')}). {result['settings']['depths']} depths × "
            f"{result['settings']['samples_per_depth']} samples per context length; streaming = every head keeps "
            f"{result['settings']['sink']} sink + {result['settings']['recent']} recent tokens. "
            f"Measured on {result['device']}"
            + (f" at {result['git_commit'][:7]}" if result.get("git_commit") else "")
            + f" with `{result.get('portable_command', result['command'])}`:", "",
            *table, "",
            *value_lines(result, value_results or []),
            f"Held-out text perplexity (1024-token windows): full {s['full']['ppl']:.2f}, streaming "
            f"{s['streaming']['ppl']:.2f}.", "",
            "Samples (temperature 0.8, top-k 40):", "",
        ]
        for smp in result.get("text_samples", []):
            parts += [f"> {' '.join(smp['text'].split())}", ""]
    if pattern is not None:
        how = pattern.get("training") or {}
        recipe = how.get("recipe", "recipes/identify-sedpa-tiny.yaml")
        where = f" on {how['device']}, {how.get('steps_done', '?')} steps in {how['wall_s'] / 60:.0f} min" \
            if how.get("device") and how.get("wall_s") else ""
        parts += ["## Head pattern", "",
                  f"`{PATTERN_FILE}` beside the weights: the retrieval/streaming heads of these weights, found by "
                  f"`sedpa identify-heads --recipe {recipe}`{where} (used by `sedpa compress` when no `--pattern` "
                  "is given).", ""]
    parts += ["## Licence", "",
              "Weights: Apache-2.0 (as sedpa). Training text: the King James Bible (public domain) and Python's "
              "documentation (PSF licence); see `calibration/SOURCES.md`.", ""]
    return "\n".join(parts)


def ship(stage_specs: list[str], dest: Path, eval_json: Path | None, pattern: Path | None,
         value_evals: list[Path] | None = None) -> Path:
    """The embedded folder from its stages' runs: weights, tokenizer, card. `value_evals`: acceptance JSONs with
    every value of one kind (`tiny.evaluate --values phrase`) of the same weights, shown in the card beside `eval_json`."""
    stages = [_stage(s) for s in stage_specs]
    if not stages:
        raise SedpaError("no --stage given: pass each training run's model/ folder, first to last")
    final_dir = Path(stage_specs[-1].partition("@")[0])
    if not final_dir.is_dir():
        raise SedpaError(f"the last --stage, {final_dir}, must be the model/ folder whose weights ship")
    infos = [item for _, items in stages for item in items]
    titles, n = [], 0
    for _, items in stages:
        titles.append(f"stage {n + 1}" if len(items) == 1 else f"stages {n + 1}–{n + len(items)}")
        n += len(items)
    files = model_files(final_dir)
    weights_file = final_dir / next(f for f in files if f.endswith(".safetensors"))
    for name in files:
        if not (final_dir / name).is_file():
            raise SedpaError(f"{final_dir} lacks {name}: pass the model/ folder of a finished run")
    n = infos[-1][0].get("averaged")
    if n:
        runs = infos[-1 - n:-1]
        if runs:  # the average trained nothing: its config and size are its runs'
            infos[-1] = ({"config": runs[-1][0]["config"], "parameters": runs[-1][0]["parameters"],
                          **infos[-1][0]}, infos[-1][1])
        shape = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size")
        # each of the n stages before it must be a run of the average's shape (an average of averages is no soup
        # of fine-tunes, and the card would name the wrong stages)
        if len(runs) < n or any(info.get("averaged") or any(info["config"][f] != infos[-1][0]["config"][f]
                                                            for f in shape) for info, _ in runs):
            raise SedpaError(f"{final_dir} averages {n} runs: pass their training JSONs (or model/ folders) as the "
                             f"{n} --stage before it, in the order averaged")
    weights = weights_file.stat().st_size
    if weights > SIZE_BUDGET_BYTES:
        raise SedpaError(f"{weights_file} is {weights / 1e6:.1f} MB, over the embedded model's "
                         f"{SIZE_BUDGET_BYTES / 1e6:.0f} MB budget (it ships inside the package): train a smaller "
                         "shape (fewer layers or a narrower MLP)"
                         + ("" if weights_file.name == INT8_FILE else
                            ", or store it as int8 (python -m sedpa_compress.models.int8 quantize)"))
    result = json.loads(Path(eval_json).read_text()) if eval_json else None
    weights_sha = sha256_file(weights_file)
    value_results = [json.loads(Path(p).read_text()) for p in value_evals or []]
    if value_results and not result:
        raise SedpaError("--values-eval goes with --eval: pass the acceptance JSON of the held-out mix too")
    for path, r in zip(value_evals or [], value_results):
        if r.get("settings", {}).get("values", "default") == "default" or r.get("weights_sha256") not in (
                None, weights_sha):
            raise SedpaError(f"--values-eval {path} is not an acceptance with one kind of value of these weights: pass "
                             "a JSON of python -m sedpa_compress.tiny.evaluate --values KIND on the shipped weights")
    with atomic_directory(dest, overwrite=True) as tmp:
        for name in files:
            shutil.copy2(final_dir / name, tmp / name)
        if pattern:
            shutil.copy2(pattern, tmp / PATTERN_FILE)
        combined_loss_curve([(png, t) for (png, _), t in zip(stages, titles) if png is not None],
                            tmp / "loss_curve.png")
        (tmp / "training.json").write_text(json.dumps(
            {"stages": [dict(info, commit=commit) for info, commit in infos]}, indent=2) + "\n")
        if result:
            (tmp / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
        shown = result and dict(result, portable_command=eval_command(result, weights_sha, eval_json))
        (tmp / "README.md").write_text(render_card(infos, shown, json.loads(Path(pattern).read_text())
                                                   if pattern else None, int8=weights_file.name == INT8_FILE,
                                                   value_results=value_results))
    return dest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Assemble the embedded sedpa-tiny from its training stages.")
    ap.add_argument("--stage", action="append", default=[],
                    help="model/ folder of a run (or, before the last, its training JSON), optionally @commit")
    ap.add_argument("--eval", default=None, help="acceptance JSON (python -m sedpa_compress.tiny.evaluate)")
    ap.add_argument("--pattern", default=None, help="head pattern JSON to ship beside the weights")
    ap.add_argument("--values-eval", action="append", default=[],
                    help="acceptance JSON with every value of one kind (tiny.evaluate --values phrase), shown in the "
                         "card (repeat for more)")
    ap.add_argument("--dest", default=str(EMBEDDED_DIR / "sedpa-tiny"))
    args = ap.parse_args(argv)
    with one_line_errors():
        out = ship(args.stage, Path(args.dest), Path(args.eval) if args.eval else None,
                   Path(args.pattern) if args.pattern else None, [Path(p) for p in args.values_eval])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
