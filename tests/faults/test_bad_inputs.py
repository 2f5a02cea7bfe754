"""Every bad input the issues name, tried through the CLI: exit 2, one line naming the problem and the fix.

Each case is (area, what the input is, the command, a phrase the message must contain). The rows these
record become the README's "What sedpa refuses, and why" table. Commands that have not landed in this
checkout yet (bench, hub) are skipped by name, so the table grows as they land.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from faults.harness import TALLY, cli, has_command, refused


def _file(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _gpt2(tmp: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp / "gpt2")
    return tmp / "gpt2"


def _resaved(art: Path) -> Path:
    from sedpa_compress.artifact.manifest import write_manifest

    write_manifest(art)  # a consistent manifest: the loader itself must catch what is wrong
    return art


def _edit_config(w, tmp: Path, edit) -> Path:
    art = w.artifact_copy(tmp / "art")
    cfg = json.loads((art / "config.json").read_text())
    edit(cfg)
    (art / "config.json").write_text(json.dumps(cfg))
    return _resaved(art)


def _edit_tensors(w, tmp: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    art = w.artifact_copy(tmp / "art")
    state = load_file(str(art / "model.safetensors"))
    edit(state)
    save_file(state, str(art / "model.safetensors"), metadata={"format": "pt"})
    return _resaved(art)


def _sha_broken(w, tmp: Path) -> Path:
    art = w.artifact_copy(tmp / "art")
    f = art / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    return art


def _truncated_header(w, tmp: Path) -> Path:
    art = w.artifact_copy(tmp / "art")
    f = art / "model.safetensors"
    f.write_bytes(f.read_bytes()[:40])
    return _resaved(art)


def _oversized_header(w, tmp: Path) -> Path:
    art = w.artifact_copy(tmp / "art")
    f = art / "model.safetensors"
    f.write_bytes((2**40).to_bytes(8, "little") + f.read_bytes()[8:])
    return _resaved(art)


def _custom_code(w, tmp: Path) -> Path:
    """An artifact whose config asks transformers to import a .py file that ships with it."""
    def edit(cfg):
        cfg["model_type"] = "evil_sedpa_test"
        cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}

    art = _edit_config(w, tmp, edit)
    marker = tmp / "EXECUTED"
    _file(art / "evil.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    return _resaved(art)


def _nan_tensor(state):
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][0] = float("nan")


def _int_weights(state):
    key = next(k for k, v in state.items() if v.is_floating_point() and "embed" in k)
    state[key] = state[key].to(__import__("torch").int32)


def _wrong_shape(state):
    import torch

    key = next(k for k in state if k.endswith("embed_tokens.weight"))
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])


def _extra_tensor(state):
    import torch

    state["model.backdoor.weight"] = torch.zeros(2, 2)


def _escape_manifest(w, tmp: Path) -> Path:
    art = w.artifact_copy(tmp / "art")
    m = json.loads((art / "manifest.json").read_text())
    m["files"]["../../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
    (art / "manifest.json").write_text(json.dumps(m))
    return art


def _missing_pattern(w, tmp: Path) -> Path:
    art = w.artifact_copy(tmp / "art")
    (art / "sedpa_pattern.json").unlink()
    return art


def _checkpoint(w, tmp: Path, *extra: str) -> Path:
    """A real identify-heads checkpoint for the tiny model (2 steps), beside tmp/heads.pattern.json."""
    out = tmp / "heads.pattern.json"
    r = cli("identify-heads", "--model", w.model, "--out", out, *SMALL_HEADS, "--steps", 2, *extra)
    assert r.exit_code == 0, r.output
    return out


def NIAH(w, t) -> list:
    return ["bench", "niah", "--model", w.model, "-a", "full", "--depths", 1, "--out", t / "n.json", "--device", "cpu"]


def LONGBENCH(w, t, qasper: str = '{"input": "q", "context": "c", "answers": ["a"], "length": 5}\n') -> list:
    _file(t / "lb" / "qasper.jsonl", qasper)
    return ["bench", "longbench", "--model", w.model, "-a", "full", "--data-dir", t / "lb", "--out", t / "l.json",
            "--device", "cpu"]


SMALL_HEADS = ["--sink", 4, "--recent", 16, "--context-min", 300, "--context-max", 360, "--num-passkeys", 1,
               "--device", "cpu"]

# (area, what, args(w, tmp) -> list, expect)
CASES = [
    # ------------------------------------------------------------------------------ pipeline (issue 2)
    ("pipeline", "--model path that does not exist",
     lambda w, t: ["compress", "--model", t / "missing", "--scope", "all", "--out", t / "x"], "no such directory"),
    ("pipeline", "--model is a file, not a model directory",
     lambda w, t: ["compress", "--model", w.pattern, "--scope", "all", "--out", t / "x"], "no config.json"),
    ("pipeline", "unsupported architecture (GPT-2)",
     lambda w, t: ["compress", "--model", _gpt2(t), "--scope", "all", "--out", t / "x"], "unsupported architecture"),
    ("pipeline", "--rank-ratio 0",
     lambda w, t: ["compress", "--model", w.model, "--rank-ratio", 0, "--out", t / "x"], "outside (0, 1]"),
    ("pipeline", "--rank-ratio 1.5",
     lambda w, t: ["compress", "--model", w.model, "--rank-ratio", 1.5, "--out", t / "x"], "outside (0, 1]"),
    ("pipeline", "--rank-ratio nan",
     lambda w, t: ["compress", "--model", w.model, "--rank-ratio", "nan", "--out", t / "x"], "outside (0, 1]"),
    ("pipeline", "--rank-ratio not a number",
     lambda w, t: ["compress", "--model", w.model, "--rank-ratio", "lots", "--out", t / "x"], "Invalid value"),
    ("pipeline", "--scope unknown",
     lambda w, t: ["compress", "--model", w.model, "--scope", "some", "--pattern", w.pattern,
                   "--calibration", w.calibration, "--out", t / "x"], "unknown --scope"),
    ("pipeline", "--rank-search unknown",
     lambda w, t: ["compress", "--model", w.model, "--rank-search", "magic", "--pattern", w.pattern,
                   "--calibration", w.calibration, "--no-ppl", "--out", t / "x"], "unknown --rank-search"),
    ("pipeline", "--scope streaming without a head pattern",
     lambda w, t: ["compress", "--model", w.model, "--out", t / "x"], "needs a head pattern"),
    ("pipeline", "pattern whose layer/head counts differ from the model",
     lambda w, t: ["compress", "--model", w.model, "--pattern", w.other_pattern, "--out", t / "x"],
     "KV heads but the model has"),
    ("pipeline", "--pattern file that does not exist",
     lambda w, t: ["compress", "--model", w.model, "--pattern", t / "none.pattern.json", "--out", t / "x"],
     "does not exist"),
    ("pipeline", "--pattern file that is not JSON",
     lambda w, t: ["compress", "--model", w.model, "--pattern", _file(t / "p.pattern.json", "{gates: [1"),
                   "--out", t / "x"], "not valid JSON"),
    ("pipeline", "--retrieval-ratio 1.5",
     lambda w, t: ["compress", "--model", w.model, "--pattern", w.pattern, "--retrieval-ratio", 1.5,
                   "--out", t / "x"], "outside [0, 1]"),
    ("pipeline", "--window smaller than the pattern's recent",
     lambda w, t: ["compress", "--model", w.model, "--pattern", w.pattern, "--window", 2, "--out", t / "x"],
     "smaller than"),
    ("pipeline", "calibration file made for another model",
     lambda w, t: ["compress", "--model", w.model, "--scope", "all", "--calibration", w.other_calibration,
                   "--out", t / "x"], "made for another model"),
    ("pipeline", "calibration file that does not exist",
     lambda w, t: ["compress", "--model", w.model, "--scope", "all", "--calibration", t / "none.safetensors",
                   "--out", t / "x"], "does not exist"),
    ("pipeline", "calibration file that is not safetensors",
     lambda w, t: ["compress", "--model", w.model, "--scope", "all",
                   "--calibration", _file(t / "c.safetensors", b"\x00" * 64), "--out", t / "x"],
     "not a readable safetensors"),
    ("pipeline", "calibration file that is another safetensors file (the artifact's weights)",
     lambda w, t: ["compress", "--model", w.model, "--scope", "all",
                   "--calibration", w.artifact / "model.safetensors", "--out", t / "x"],
     "not a sedpa calibration file"),
    ("pipeline", "empty calibration data (empty JSONL)",
     lambda w, t: ["calibrate", "--model", w.model, "--data", _file(t / "e.jsonl", ""), "--out", t / "c"],
     "gave no tokens"),
    ("pipeline", "calibration text of whitespace only",
     lambda w, t: ["calibrate", "--model", w.model, "--data", _file(t / "e.txt", "  \n\n\t\n"), "--out", t / "c"],
     "gave no tokens"),
    ("pipeline", "calibration folder with no .txt files",
     lambda w, t: ["calibrate", "--model", w.model, "--data", (t / "d").mkdir() or t / "d", "--out", t / "c"],
     "no .txt files"),
    ("pipeline", "malformed JSONL line (file and line number)",
     lambda w, t: ["calibrate", "--model", w.model, "--data", _file(t / "bad.jsonl", '{"text": "ok"}\n{oops\n'),
                   "--out", t / "c"], "bad.jsonl:2"),
    ("pipeline", "JSONL line without the text field",
     lambda w, t: ["calibrate", "--model", w.model, "--data", _file(t / "f.jsonl", '{"body": "ok"}\n'),
                   "--out", t / "c"], "f.jsonl:1"),
    ("pipeline", "--data path that does not exist",
     lambda w, t: ["calibrate", "--model", w.model, "--data", t / "nothing.jsonl", "--out", t / "c"],
     "no such file"),
    ("pipeline", "--tokens 0",
     lambda w, t: ["calibrate", "--model", w.model, "--tokens", 0, "--out", t / "c"], "--tokens 0"),
    ("pipeline", "--out that already exists",
     lambda w, t: ["compress", "--model", w.model, "--scope", "all", "--out", (t / "art").mkdir() or t / "art"],
     "already exists"),
    ("pipeline", "--out inside a regular file (it used to say only \"File exists\")",
     lambda w, t: ["calibrate", "--model", w.model, "--tokens", 256, "--seq-len", 64,
                   "--out", _file(t / "afile", "x") / "c.safetensors"], "is a file, not a folder"),
    ("pipeline", "--model that is already a sedpa artifact",
     lambda w, t: ["compress", "--model", w.artifact, "--scope", "all", "--out", t / "x"], "already a sedpa artifact"),
    ("pipeline", "--dtype unknown",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "hi", "--dtype", "float7"], "unknown --dtype"),
    ("pipeline", "--config unknown geometry preset",
     lambda w, t: ["calibrate", "--config", "gpt-5", "--random-weights", "--out", t / "c"], "gpt-5"),
    ("pipeline", "--config without --random-weights",
     lambda w, t: ["calibrate", "--config", "llama-3-8b", "--out", t / "c"], "--random-weights"),
    ("pipeline", "--model and --config together",
     lambda w, t: ["calibrate", "--model", w.model, "--config", "llama-3-8b", "--random-weights", "--out", t / "c"],
     "not both"),
    ("pipeline", "generate without a prompt",
     lambda w, t: ["generate", "--model", w.model], "exactly one of --prompt"),
    ("pipeline", "--prompt-file that does not exist",
     lambda w, t: ["generate", "--model", w.model, "--prompt-file", t / "none.txt"], "does not exist"),
    ("pipeline", "empty prompt",
     lambda w, t: ["generate", "--model", w.model, "--prompt", ""], "prompt is empty"),
    ("pipeline", "--max-new-tokens 0",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "hi", "--max-new-tokens", 0], "--max-new-tokens 0"),
    ("pipeline", "--top-p 0",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "hi", "--temperature", 1, "--top-p", 0], "--top-p"),
    # ---------------------------------------------------------------------------------- artifacts
    ("artifact", "a file fails its manifest sha256",
     lambda w, t: ["generate", "--model", _sha_broken(w, t), "--prompt", "hi"], "fails its sha256"),
    ("artifact", "truncated safetensors header",
     lambda w, t: ["generate", "--model", _truncated_header(w, t), "--prompt", "hi"], "not a valid safetensors"),
    ("artifact", "oversized safetensors header length (1 TiB)",
     lambda w, t: ["generate", "--model", _oversized_header(w, t), "--prompt", "hi"], "not a valid safetensors"),
    ("artifact", "manifest lists a file outside the artifact",
     lambda w, t: ["generate", "--model", _escape_manifest(w, t), "--prompt", "hi"], "outside the artifact"),
    ("artifact", "manifest missing",
     lambda w, t: ["generate", "--model", (lambda a: (a / "manifest.json").unlink() or a)(w.artifact_copy(t / "art")),
                   "--prompt", "hi"], "no manifest.json"),
    ("artifact", "a listed file is missing",
     lambda w, t: ["generate", "--model", _missing_pattern(w, t), "--prompt", "hi"], "is missing"),
    ("artifact", "artifact format version from the future",
     lambda w, t: ["generate", "--model", _edit_config(w, t, lambda c: c["sedpa"].update(format_version=99)),
                   "--prompt", "hi"], "format 99"),
    ("artifact", "projection entry malformed",
     lambda w, t: ["generate", "--model", _edit_config(
         w, t, lambda c: c["sedpa"]["projections"].update({k: {"rank": -1} for k in list(c["sedpa"]["projections"])[:1]})),
         "--prompt", "hi"], "malformed"),
    ("artifact", "projection the architecture does not have",
     lambda w, t: ["generate", "--model", _edit_config(
         w, t, lambda c: c["sedpa"]["projections"].update(
             {"model.layers.99.self_attn.q_proj": next(iter(c["sedpa"]["projections"].values()))})),
         "--prompt", "hi"], "does not have"),
    ("artifact", "factor rank that does not match the tensors",
     lambda w, t: ["generate", "--model", _edit_config(
         w, t, lambda c: next(iter(c["sedpa"]["projections"].values())).update(rank=1000)),
         "--prompt", "hi"], "shape"),
    ("artifact", "config asks to run custom code (auto_map + .py file)",
     lambda w, t: ["generate", "--model", _custom_code(w, t), "--prompt", "hi"], "not a valid transformers config"),
    ("artifact", "tensor holding NaN",
     lambda w, t: ["generate", "--model", _edit_tensors(w, t, _nan_tensor), "--prompt", "hi"], "NaN"),
    ("artifact", "weights of an integer dtype",
     lambda w, t: ["generate", "--model", _edit_tensors(w, t, _int_weights), "--prompt", "hi"], "dtype"),
    ("artifact", "tensor of the wrong shape",
     lambda w, t: ["generate", "--model", _edit_tensors(w, t, _wrong_shape), "--prompt", "hi"], "shape"),
    ("artifact", "tensor the config does not know",
     lambda w, t: ["generate", "--model", _edit_tensors(w, t, _extra_tensor), "--prompt", "hi"], "unexpected"),
    # ------------------------------------------------------------------------------------ runtime
    ("runtime", "prompt longer than the model's position limit",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "word " * 400], "limit"),
    ("runtime", "--attention duo without a pattern",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "hi", "--attention", "duo"], "needs a head pattern"),
    ("runtime", "--attention sedpa-w with --window smaller than recent",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "hi", "--attention", "sedpa-w", "--pattern", w.pattern,
                   "--window", 2], "smaller than --recent"),
    ("runtime", "--selection-layers without --attention tidal",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "hi", "--selection-layers", "1"], "goes with --attention tidal"),
    ("runtime", "--attention unknown",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "hi", "--attention", "fast"], "unknown --attention"),
    ("runtime", "--pattern for another model",
     lambda w, t: ["generate", "--model", w.model, "--prompt", "hi", "--attention", "duo", "--pattern", w.other_pattern],
     "KV heads but the model has"),
    # -------------------------------------------------------------------------------------- bench
    ("bench", "needle (with its question) longer than the context",
     lambda w, t: [*NIAH(w, t), "--lengths", 64, "--needle", "A very long needle sentence that goes on. " * 4
                   + "The value is {value}.", "--question", "What is the value?"], "shortest --lengths is 64"),
    ("bench", "--lengths that is not a size",
     lambda w, t: [*NIAH(w, t), "--lengths", "lots"], "pass token counts"),
    ("bench", "--lengths range that runs backwards",
     lambda w, t: [*NIAH(w, t), "--lengths", "4k:1k:3"], "START <= END"),
    ("bench", "--depths outside [0, 1]",
     lambda w, t: [*NIAH(w, t), "--depths", "1.5"], "[0, 1]"),
    ("bench", "--needle without a {value} slot or --answer",
     lambda w, t: [*NIAH(w, t), "--needle", "The code is 42.", "--question", "Code?"], "no {value} slot"),
    ("bench", "unknown mode in --attention",
     lambda w, t: [*NIAH(w, t), "-a", "full,bogus"], "unknown --attention"),
    ("bench", "--attention sedpa-s without compressed weights",
     lambda w, t: [*NIAH(w, t), "-a", "sedpa-s", "--lengths", 128], "--compressed"),
    ("bench", "--attention duo without a head pattern",
     lambda w, t: [*NIAH(w, t), "-a", "duo", "--lengths", 128], "needs a head pattern"),
    ("bench", "--selection-layers that are not layer indices",
     lambda w, t: [*NIAH(w, t), "-a", "tidal", "--lengths", 128, "--selection-layers", "2;5"], "e.g. 2,5"),
    ("bench", "--selection-layers beyond the model's layers",
     lambda w, t: [*NIAH(w, t), "-a", "tidal", "--lengths", 128, "--selection-layers", "1,9"], "the model has"),
    ("bench", "--compressed artifact of another model",
     lambda w, t: [*NIAH(w, t), "-a", "sedpa-s", "--lengths", 128, "--model", w.other, "--compressed", w.artifact],
     "another geometry"),
    ("bench", "--haystack file that does not exist",
     lambda w, t: [*NIAH(w, t), "--lengths", 128, "--haystack", t / "none.txt"], "does not exist"),
    ("bench", "ppl --seq-len beyond the model's position limit",
     lambda w, t: ["bench", "ppl", "--model", w.model, "-a", "full", "--seq-len", 4096, "--out", t / "p.json",
                   "--device", "cpu"], "1024-token limit"),
    ("bench", "ppl text shorter than one window",
     lambda w, t: ["bench", "ppl", "--model", w.model, "-a", "full", "--data", _file(t / "s.txt", "too short"),
                   "--seq-len", 256, "--out", t / "p.json", "--device", "cpu"], "fewer than --seq-len"),
    ("bench", "longbench unknown task name",
     lambda w, t: [*LONGBENCH(w, t), "--tasks", "bogus"], "unknown LongBench task bogus"),
    ("bench", "longbench malformed JSONL line (file and line number)",
     lambda w, t: [*LONGBENCH(w, t, '{"input": "q", "context": "c", "answers": ["a"], "length": 5}\n{oops\n'),
                   "--tasks", "qasper"], "qasper.jsonl:2"),
    ("bench", "longbench task file missing from --data-dir",
     lambda w, t: [*LONGBENCH(w, t), "--tasks", "trec"], "no file"),
    ("bench", "longbench --max-length beyond the model's position limit",
     lambda w, t: [*LONGBENCH(w, t), "--tasks", "qasper", "--max-length", 5000], "limit"),
    ("bench", "efficiency --contexts that is not a size",
     lambda w, t: ["bench", "efficiency", "--model", w.model, "--contexts", "lots", "--device", "cpu",
                   "--out", t / "e.json"], "--contexts"),
    ("bench", "efficiency unknown mode",
     lambda w, t: ["bench", "efficiency", "--model", w.model, "--attention", "fast", "--device", "cpu",
                   "--out", t / "e.json"], "unknown --attention"),
    ("bench", "efficiency --window smaller than --recent",
     lambda w, t: ["bench", "efficiency", "--model", w.model, "--window", 8, "--recent", 64, "--device", "cpu",
                   "--out", t / "e.json"], "smaller than --recent"),
    # -------------------------------------------------------------------------------------- heads
    ("heads", "recipe that does not parse as YAML",
     lambda w, t: ["identify-heads", "--model", w.model, "--recipe", _file(t / "r.yaml", "steps: [1, 2\n")],
     "does not parse"),
    ("heads", "recipe naming an unknown field",
     lambda w, t: ["identify-heads", "--model", w.model, "--recipe", _file(t / "r.yaml", "stepz: 3\n")], "stepz"),
    ("heads", "recipe field of the wrong type",
     lambda w, t: ["identify-heads", "--model", w.model, "--recipe", _file(t / "r.yaml", "steps: many\n")],
     "must be an integer"),
    ("heads", "recipe that is a list, not a mapping",
     lambda w, t: ["identify-heads", "--model", w.model, "--recipe", _file(t / "r.yaml", "- steps\n")],
     "mapping"),
    ("heads", "recipe file that does not exist",
     lambda w, t: ["identify-heads", "--model", w.model, "--recipe", t / "none.yaml"], "does not exist"),
    ("heads", "--context-max beyond the model's position limit",
     lambda w, t: ["identify-heads", "--model", w.model, "--context-max", 5000, "--device", "cpu",
                   "--out", t / "h.pattern.json"], "position limit"),
    ("heads", "resume checkpoint from another recipe",
     lambda w, t: ["identify-heads", "--model", w.model, "--out", _checkpoint(w, t), "--resume",
                   *SMALL_HEADS, "--steps", 2, "--lr", 0.5], "another model or recipe"),
    ("heads", "resume checkpoint from another model",
     lambda w, t: ["identify-heads", "--model", w.other, "--out", _checkpoint(w, t), "--resume",
                   *SMALL_HEADS, "--steps", 2], "another model or recipe"),
    ("heads", "resume checkpoint that is not a checkpoint",
     lambda w, t: ["identify-heads", "--model", w.model, "--out", t / "h.pattern.json", "--resume", *SMALL_HEADS,
                   "--steps", 2] if _file(t / "h.identify-ckpt.pt", b"PK\x03\x04garbage") else [],
     "cannot be read"),
    ("heads", "haystack file too short",
     lambda w, t: ["identify-heads", "--model", w.model, "--haystack", _file(t / "short.txt", "Too short. " * 5),
                   *SMALL_HEADS, "--out", t / "h.pattern.json"], "only"),
    ("heads", "haystack file that does not exist",
     lambda w, t: ["identify-heads", "--model", w.model, "--haystack", t / "none.txt", *SMALL_HEADS,
                   "--out", t / "h.pattern.json"], "does not exist"),
    ("heads", "haystack file that is not UTF-8",
     lambda w, t: ["identify-heads", "--model", w.model, "--haystack", _file(t / "h.txt", b"\xff\xfe\x00bad" * 100),
                   *SMALL_HEADS, "--out", t / "h.pattern.json"], "not UTF-8"),
    ("heads", "--context-min too short for the passkeys",
     lambda w, t: ["identify-heads", "--model", w.model, "--sink", 4, "--recent", 16, "--context-min", 20,
                   "--context-max", 300, "--device", "cpu", "--out", t / "h.pattern.json"], "too short"),
    ("heads", "--steps 0",
     lambda w, t: ["identify-heads", "--model", w.model, "--steps", 0], "at least 1"),
    ("heads", "--retrieval-ratio and --threshold together",
     lambda w, t: ["identify-heads", "--model", w.model, "--retrieval-ratio", 0.5, "--threshold", 0.5],
     "at most one"),
    ("heads", "heads show on a pattern that does not exist",
     lambda w, t: ["heads", "show", t / "none.pattern.json"], "does not exist"),
    ("heads", "heads show on a pattern with gates outside [0, 1]",
     lambda w, t: ["heads", "show", _file(t / "g.pattern.json", json.dumps(
         {"gates": [[2.0, 0.5]], "mask": [[1, 0]], "sink": 4, "recent": 16}))], "outside its range"),
    ("heads", "heads probe --k beyond the number of heads",
     lambda w, t: ["heads", "probe", "--model", w.model, "--pattern", w.pattern, "--k", 99, "--device", "cpu"],
     "--k 99"),
    ("heads", "heads probe --contexts beyond the model's limit",
     lambda w, t: ["heads", "probe", "--model", w.model, "--pattern", w.pattern, "--k", 1, "--contexts", 9000,
                   "--device", "cpu"], "limit"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[1] for c in CASES])
def test_refused(case, world, tmp_path):
    area, what, build, expect = case
    args = build(world, tmp_path)
    command = args[0] if args[0] != "heads" else f"heads {args[1]}"
    if not has_command(*command.split()):
        pytest.skip(f"`sedpa {command}` is not in this checkout yet")
    refused(area, what, args, expect)
    assert not (tmp_path / "x").exists(), "a refused compress left an --out behind"
    assert not (tmp_path / "EXECUTED").exists(), "sedpa executed code shipped in an artifact"


def test_offline_hub_id_is_refused(world, monkeypatch, tmp_path):
    """A Hub id with no cached copy on a machine without network: refuse, naming the way around it."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    refused("hub", "a Hub id with no cached copy while offline",
            ["compress", "--model", "no-such-org/no-such-model", "--scope", "all", "--out", tmp_path / "x"], "offline")
    assert not (tmp_path / "x").exists()


def test_good_inputs_still_work(world, tmp_path):
    """The fixtures the refusals start from are themselves fine (a refusal table of a broken setup proves nothing)."""
    r = cli("generate", "--model", world.artifact, "--prompt", "The king said", "-n", 3, "--device", "cpu")
    assert r.exit_code == 0, r.output
    out = shutil.copytree(world.artifact, tmp_path / "copy")
    from sedpa_compress.models import load_model

    assert load_model(str(out)).source == "artifact"


def test_niah_lengths_beyond_the_limit_are_capped_and_named(world, tmp_path):
    """Not a refusal by design (bench engineer's choice): the lengths are capped to the model's limit and
    the output and the JSON's settings say which were capped."""
    out = tmp_path / "n.json"
    r = cli("bench", "niah", "--model", world.model, "-a", "full", "--lengths", "4k", "--depths", 1, "--out", out,
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    settings = json.loads(out.read_text())["settings"]
    assert settings.get("capped") and max(settings["lengths"]) <= 1024, settings
    assert "capped" in r.output
    TALLY.fault("`sedpa bench niah --lengths 4k` on a 1024-token model",
                f"runs at {settings['lengths']} instead and says so: `capped: {settings['capped']}` "
                "(also in the JSON's settings.capped)")


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """huggingface_hub pointed at a closed local port, with a token (tests drop it where they need to)."""
    from hubstub import closed_port_url, point_huggingface_hub_at

    url = closed_port_url()
    point_huggingface_hub_at(monkeypatch, url, tmp_path / "hf", token="hf_fault_suite_token")
    return url


def _broken_copy(world, tmp_path):
    art = world.artifact_copy(tmp_path / "art")
    data = bytearray((art / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (art / "model.safetensors").write_bytes(bytes(data))
    return art


HUB_CASES = [
    ("push without a token (no HF_TOKEN, no stored login)",
     lambda w, t, mp: mp.delenv("HF_TOKEN") or ["push", w.artifact, "--repo-id", "org/name"], "token"),
    ("push --repo-id that is not ORG/NAME",
     lambda w, t, mp: ["push", w.artifact, "--repo-id", "org/na me"], "is not a Hub repo id"),
    ("push --revision that is not a branch name",
     lambda w, t, mp: ["push", w.artifact, "--repo-id", "org/name", "--revision", "a..b"], "not a valid branch name"),
    ("push an artifact that fails its manifest",
     lambda w, t, mp: ["push", _broken_copy(w, t), "--repo-id", "org/name"], "fails its sha256"),
    ("push a folder that is not an artifact",
     lambda w, t, mp: ["push", w.model, "--repo-id", "org/name"], "not a sedpa artifact"),
    ("push while the Hub is unreachable",
     lambda w, t, mp: ["push", w.artifact, "--repo-id", "org/name"], "cannot reach the Hugging Face Hub"),
    ("pull a repo id that is not ORG/NAME",
     lambda w, t, mp: ["pull", "not a repo"], "is not a Hub repo id"),
    ("pull while the Hub is unreachable",
     lambda w, t, mp: ["pull", "org/name"], "cannot reach the Hugging Face Hub"),
]


@pytest.mark.parametrize("case", HUB_CASES, ids=[c[0] for c in HUB_CASES])
def test_hub_refused(case, world, tmp_path, monkeypatch, no_hub):
    what, build, expect = case
    args = build(world, tmp_path, monkeypatch)
    if not has_command(args[0]):
        pytest.skip(f"`sedpa {args[0]}` is not in this checkout yet")
    message = refused("hub", what, args, expect)
    assert no_hub not in message or "cannot reach" in message
