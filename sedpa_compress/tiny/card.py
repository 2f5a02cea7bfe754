"""sedpa-tiny's loss-curve PNG and model card (README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sedpa_compress.atomic import atomic_write_figure


def write_loss_curve(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    if history:
        steps = [r["step"] for r in history]
        ax[0].plot(steps, [r["loss_text"] for r in history], label="text tokens", lw=1)
        ax[0].plot(steps, [r["loss_answer"] for r in history], label="answer tokens", lw=1)
        ax[0].set_yscale("log")
        ax[1].plot(steps, [r["answer_token_acc"] for r in history], lw=1, color="C2")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("cross-entropy (nats)")
    ax[0].set_title("sedpa-tiny training loss")
    ax[0].legend()
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("accuracy")
    ax[1].set_title("answer-token accuracy (train batches)")
    ax[1].set_ylim(0, 1.02)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=90)


def _table(result: dict[str, Any]) -> str:
    contexts = result["settings"]["contexts"]
    lines = ["| attention | " + " | ".join(f"{c // 1024}K" for c in contexts) + " |",
             "|---|" + "---|" * len(contexts)]
    for mode in ("full", "streaming"):
        acc = result["summary"][mode]["accuracy_by_context"]
        lines.append(f"| {mode} | " + " | ".join(f"{acc[str(c)]:.2f}" for c in contexts) + " |")
    return "\n".join(lines)


def write_card(model_dir: Path, info: dict[str, Any], history: list[dict[str, Any]],
               result: dict[str, Any] | None) -> None:
    cfg = info["config"]
    final = info.get("final") or {}
    parts = [
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [sedpa, llama, long-context, needle-in-a-haystack, tiny]",
        "---",
        "",
        "# sedpa-tiny",
        "",
        "The default model of [sedpa](../../../../README.md): a small Llama-architecture causal LM (GQA, RoPE) "
        "that ships inside the package, so every sedpa command runs offline, and that really retrieves facts "
        f"from long contexts (up to {max(int(k) for e in cfg['curriculum'] for k in e['lengths']) // 1024}K tokens), "
        "so head identification, compression and the needle benchmark "
        "measure something true. It is a test model, not a useful assistant: it writes text in the style of "
        "the King James Bible and Python's documentation, and answers key→value questions about its context.",
        "",
        "## Architecture",
        "",
        f"- {info['parameters'] / 1e6:.1f}M parameters; {cfg['num_layers']} layers, hidden {cfg['hidden_size']}, "
        f"{cfg['num_heads']} query heads and {cfg['num_kv_heads']} KV heads (head dim {cfg['hidden_size'] // cfg['num_heads']}), "
        f"SwiGLU MLP {cfg['intermediate_size']}, RMSNorm, tied embeddings",
        f"- RoPE theta {cfg['rope_theta']:g}, max positions {cfg['max_position_embeddings']}; trained on sequences up to "
        f"{max(int(k) for e in cfg['curriculum'] for k in e['lengths'])} tokens",
        f"- tokenizer: byte-level BPE, {cfg['vocab_size']} tokens, trained on the shipped text, one token per digit",
        "- weights: bf16 safetensors (sedpa upcasts to fp32 on the CPU)",
        "",
        "## Training",
        "",
        "Command (the project's own trainer; see `recipes/tiny.yaml` for every setting):",
        "",
        "```",
        f"{info['command']}",
        "```",
        "",
        f"- {info['steps_done']} optimizer steps of {cfg['tokens_per_step']} tokens on {info['device']}, "
        f"{info['elapsed_s'] / 60:.1f} minutes" + (f"; continued from `{info['init_from']}`" if info.get("init_from") else ""),
        f"- AdamW lr {cfg['lr']} (warmup {cfg['warmup_steps']} steps, cosine to {cfg['min_lr_ratio']}×), "
        f"weight decay {cfg['weight_decay']}, bf16 autocast",
        f"- data: {round(100 * (1 - cfg['needle_fraction'] - cfg.get('copy_fraction', 0.0)))}% plain text sequences "
        "from the shipped text (train split of `sedpa_compress/data/bundled/*.txt.gz`: the King James Bible, public "
        "domain, and Python's reference topics and standard-library docstrings, PSF licence)"
        + (f" and the train split of the corpus `{cfg['corpus']}`" if cfg.get("corpus") else "")
        + f", {round(100 * cfg.get('copy_fraction', 0.0))}% copy practice (random-token spans repeated), "
        f"{round(100 * cfg['needle_fraction'])}% retrieval sequences: the same text as haystack with 1-{cfg['max_needles']} key→value needles (passkeys, "
        f"numbers, city/name/object→code facts, invented keys) at random depths and 1-{cfg['max_queries']} "
        "questions at the end" + (f" (or up to {cfg['needles_per_4k']:g} needles and {cfg['queries_per_4k']:g} "
                                  "questions per 4K tokens in longer sequences)"
                                  if cfg.get("needles_per_4k") or cfg.get("queries_per_4k") else "")
        + " (training templates only; loss = text CE + answer CE)",
        "- sequence-length curriculum: " + "; ".join(
            f"until {e['until']:.0%}: {', '.join(str(k) for k in e['lengths'])}" for e in cfg["curriculum"]),
        f"- final training losses: text {final.get('loss_text', float('nan')):.3f} nats/token, answer "
        f"{final.get('loss_answer', float('nan')):.3f} (answer-token accuracy {final.get('answer_token_acc', float('nan')):.3f})",
        "",
        "![loss curve](loss_curve.png)",
        "",
    ]
    if result:
        s = result["summary"]
        parts += [
            "## Evaluation (held-out templates and held-out text)",
            "",
            f"Needle retrieval, exact greedy match, {result['settings']['depths']} depths × "
            f"{result['settings']['samples_per_depth']} samples per context; streaming = every head keeps "
            f"{result['settings']['sink']} sink + {result['settings']['recent']} recent tokens:",
            "",
            _table(result),
            "",
            f"Held-out text perplexity (1024-token windows): full {s['full']['ppl']:.2f}, "
            f"streaming {s['streaming']['ppl']:.2f}. Measured on {result['device']}.",
            "",
            "Samples (temperature 0.8, top-k 40):",
            "",
        ]
        for smp in result.get("text_samples", []):
            parts.append(f"> {smp['text'].strip()}")
            parts.append("")
    parts += [
        "## Licence",
        "",
        "Weights: Apache-2.0 (as sedpa). Training text: public domain (KJV) and PSF licence (Python docs); see "
        "`calibration/SOURCES.md`.",
        "",
    ]
    (Path(model_dir) / "README.md").write_text("\n".join(parts))
