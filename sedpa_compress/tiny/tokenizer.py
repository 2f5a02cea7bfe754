"""sedpa-tiny's tokenizer: byte-level BPE trained on the shipped text, one token per digit.

The space before a number stays a token of its own ("Ġ"). That bare "Ġ" marks where every number starts,
which is what let retrieval form quickly (an induction step: after "Ġ", copy what followed a "Ġ" in the
needle). A run where " 4" was one token ("Ġ4") never learned retrieval in the same budget.

A letter-first value did not get that start: " XK-4821" opened with "ĠX", and the trained models, having learned
"after the answer prefix comes a bare Ġ", wrote the bare space and then a digit (bench/results/
tiny_needle_attention_cpu.json: a head on the value, the first token lost to "Ġ"; shipped: letter-first values
found 1/11, digit-first 46/49). `value_space` isolates the space before every word that holds a digit, so every
such value opens alike ("Ġ", "X", "K", "-", "4", ...); ordinary text is untouched (+0.1% tokens on the shipped
text). Invented-word values ("Velomar") still open with a merged token: no rule tells them from prose."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
# the space before a word that holds a digit ("XK-4821", "b7q2", "COVID-19"): isolated by `value_space`
VALUE_SPACE_REGEX = r" (?=[^\s\d]*\d)"


def pre_tokenizer(value_space: bool = False) -> pre_tokenizers.PreTokenizer:
    """Digits one per token after a bare space; with `value_space` the space before any word holding a digit
    is a token of its own too."""
    steps = [pre_tokenizers.Digits(individual_digits=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if value_space:
        steps.insert(0, pre_tokenizers.Split(Regex(VALUE_SPACE_REGEX), behavior="isolated"))
    return pre_tokenizers.Sequence(steps)


def has_value_space(tokenizer_json: dict) -> bool:
    """Whether a tokenizer.json (parsed) isolates the space before values (`pre_tokenizer(value_space=True)`)."""
    steps = (tokenizer_json.get("pre_tokenizer") or {}).get("pretokenizers") or []
    return any(st.get("type") == "Split" and (st.get("pattern") or {}).get("Regex") == VALUE_SPACE_REGEX
               for st in steps)


def with_value_space(tokenizer_json: dict) -> dict:
    """The same tokenizer (vocabulary and merges unchanged) with the `value_space` pre-tokenizer: what a model
    trained with the plain one is fine-tuned to. A pure edit of the parsed JSON, so its bytes (and the sha256
    a kept checkpoint records) depend only on the input, never on the tokenizers version."""
    if has_value_space(tokenizer_json):
        return tokenizer_json
    steps = list((tokenizer_json.get("pre_tokenizer") or {}).get("pretokenizers") or [])
    if [st.get("type") for st in steps] != ["Digits", "ByteLevel"]:
        raise ValueError("with_value_space expects sedpa-tiny's pre-tokenizer (Digits, then ByteLevel); got "
                         f"{[st.get('type') for st in steps]}")
    split = {"type": "Split", "pattern": {"Regex": VALUE_SPACE_REGEX}, "behavior": "Isolated", "invert": False}
    return {**tokenizer_json, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, *steps]}}


def without_value_space(tokenizer_json: dict) -> dict:
    """The plain form of a `value_space` tokenizer (the inverse of `with_value_space`): what the stages trained
    before value_space came in were trained with, restorable from a shipped tokenizer that has the form."""
    if not has_value_space(tokenizer_json):
        return tokenizer_json
    steps = [st for st in tokenizer_json["pre_tokenizer"]["pretokenizers"]
             if not (st.get("type") == "Split" and (st.get("pattern") or {}).get("Regex") == VALUE_SPACE_REGEX)]
    return {**tokenizer_json, "pre_tokenizer": {**tokenizer_json["pre_tokenizer"], "pretokenizers": steps}}


def tokenizer_forms(tokenizer_file: Path) -> dict[str, bytes]:
    """A sedpa-tiny tokenizer.json's bytes in each form a stage may have been trained with: as it is, its value_space
    form (as `write_value_space` writes it) and its plain form (as `Tokenizer.save` wrote the plain runs' own:
    2-space JSON, no final newline). Another tokenizer has only the first."""
    raw = Path(tokenizer_file).read_bytes()
    forms = {"as is": raw}
    data = json.loads(raw.decode("utf-8"))
    try:
        forms["value_space"] = _value_space_bytes(data)
    except ValueError:  # not sedpa-tiny's pre-tokenizer: it has no other form
        return forms
    forms["plain"] = json.dumps(without_value_space(data), ensure_ascii=False, indent=2).encode("utf-8")
    return forms


def _value_space_bytes(tokenizer_json: dict) -> bytes:
    return (json.dumps(with_value_space(tokenizer_json), ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def write_value_space(src: Path, dst: Path) -> None:
    """Write `src` tokenizer.json as its `value_space` form to `dst` (same bytes for the same input)."""
    Path(dst).write_bytes(_value_space_bytes(json.loads(Path(src).read_text(encoding="utf-8"))))


def train_tokenizer(text: str, vocab_size: int, value_space: bool = False) -> Tokenizer:
    """Byte-level BPE (never an unknown token) with digits split one per token, so numbers copy exactly."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(value_space)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator((p for p in text.split("\n\n")), trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: Path, model_max_length: int) -> None:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json, loadable offline by AutoTokenizer."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2) + "\n"
    )


def load_hf_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)


def main(argv: list[str] | None = None) -> None:
    """`value-space MODEL --to DIR`: a copy of a model folder whose tokenizer is the value_space form (a look at what
    the switch alone does to a model trained with the plain one, before any fine-tuning)."""
    import argparse
    import shutil

    from sedpa_compress.atomic import atomic_directory
    from sedpa_compress.errors import SedpaError, one_line_errors

    ap = argparse.ArgumentParser(prog="python -m sedpa_compress.tiny.tokenizer", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("value-space", help="copy a model folder with its tokenizer switched to the value_space form")
    v.add_argument("model", type=Path)
    v.add_argument("--to", type=Path, required=True)
    args = ap.parse_args(argv)
    with one_line_errors():
        if not (args.model / "tokenizer.json").is_file():
            raise SedpaError(f"{args.model} has no tokenizer.json: pass a sedpa-tiny model folder")
        if args.to.exists():
            raise SedpaError(f"--to {args.to} already exists: choose another path")
        with atomic_directory(args.to) as tmp:
            shutil.copytree(args.model, tmp, dirs_exist_ok=True)
            try:
                write_value_space(args.model / "tokenizer.json", tmp / "tokenizer.json")
            except ValueError as exc:
                raise SedpaError(f"{args.model}: {exc}") from None
    print(args.to)


if __name__ == "__main__":
    main()
