"""sedpa-tiny's tokenizer: byte-level BPE trained on the shipped text, one token per digit.

A digit keeps the space before it (" 4821" -> "Ġ4", "8", "2", "1"): with the space as a token of its own,
the first token of every answer was a bare "Ġ" that carries no information, and on unseen question
wordings the model's text prior ("Ġthat", "Ġused") beat it although it had found the right number."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
_DIGIT_LINES = 2000


def train_tokenizer(text: str, vocab_size: int) -> Tokenizer:
    """Byte-level BPE (never an unknown token) with digits split one per token (each keeping a space
    before it), so numbers copy exactly."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?[0-9]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    # Lines of spaced digits make sure every " d" merge (Ġ0..Ġ9) is in the vocabulary.
    digits = [" ".join("0123456789")] * _DIGIT_LINES
    tok.train_from_iterator([*text.split("\n\n"), *digits], trainer=trainer)
    missing = [f"Ġ{d}" for d in range(10) if tok.token_to_id(f"Ġ{d}") is None]
    assert not missing, f"tokenizer lacks {missing}: raise _DIGIT_LINES"
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

    return AutoTokenizer.from_pretrained(str(model_dir))
