"""`--kv-dtype fp8` through the commands (issue 13): generate, bench niah / ppl and efficiency on a tiny
model on the CPU (the fast runtime's eager path: fp8 caches exist only there), the artifact's recorded
default, and the refusals. The kernels and caches themselves: tests/test_runtime.py (fp8 section and the
Triton-interpreter test); speed and the longest context: the GPU run (bench/results/)."""

from __future__ import annotations

import json

import pytest

from conftest import invoke_cli, tiny_llama_with_pattern
from sedpa_compress.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _flat(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fp8")
    return tmp, tiny_llama_with_pattern(tmp)


def test_niah_and_ppl_with_fp8_caches_run_the_fast_runtime_and_key_the_cache_on_it(setup):
    tmp, model = setup
    out = tmp / "niah.json"
    args = ("bench", "niah", "--model", model, "--pattern", tmp / "p.pattern.json", "-a", "full,duo",
            "--lengths", "256,384", "--depths", "2", "--device", "cpu", "--out", out)
    r = invoke_cli(*args, "--kv-dtype", "fp8")
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["settings"]["modes"]["full"]["kv_dtype"] == "fp8" and len(res["rows"]) == 2 * 2 * 2
    # the JSON names the code that ran: the fast runtime (fp8 caches), not the reference path
    assert {m["path"] for m in res["settings"]["modes"].values()} == {"fast runtime"}
    r = invoke_cli(*args)  # bf16 caches: other cells, not served from the fp8 run's cache
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["settings"]["cache_hits"] == 0 and "kv_dtype" not in res["settings"]["modes"]["full"]
    assert [res["settings"]["modes"][m]["path"] for m in ("full", "duo")] == ["model sdpa", "reference"]  # CPU
    ppl = {}
    for kv in ("bf16", "fp8"):
        r = invoke_cli("bench", "ppl", "--model", model, "-a", "full", "--seq-len", 256, "--windows", 1,
                       "--decode-tail", 8, "--device", "cpu", "--kv-dtype", kv, "--out", tmp / f"ppl_{kv}.json")
        assert r.exit_code == 0, r.output
        ppl[kv] = json.loads((tmp / f"ppl_{kv}.json").read_text())["summary"]["full"]["ppl"]
    assert ppl["fp8"] == pytest.approx(ppl["bf16"], rel=0.05)  # e4m3 caches: close, not equal
    assert ppl["fp8"] != ppl["bf16"]


def test_tidal_runs_on_fp8_caches_from_the_cli(setup):
    """tidal reads fp8 caches too (its selection layers convert the keys a block at a time): generate and bench
    niah run it, and the NIAH row says which caches it read."""
    tmp, model = setup
    r = invoke_cli("generate", "--model", model, "--prompt", "hello there " * 40, "-n", 3, "--device", "cpu",
                   "--attention", "tidal", "--top-k", 16, "--kv-dtype", "fp8")
    assert r.exit_code == 0, r.output
    assert "fp8 KV" in _flat(r.output)
    out = tmp / "niah_tidal.json"
    r = invoke_cli("bench", "niah", "--model", model, "--pattern", tmp / "p.pattern.json", "-a", "tidal",
                   "--top-k", 64, "--lengths", "256", "--depths", "2", "--device", "cpu", "--kv-dtype", "fp8",
                   "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["settings"]["modes"]["tidal"]["kv_dtype"] == "fp8" and len(res["rows"]) == 2


def test_generate_and_the_artifacts_recorded_default(setup):
    tmp, model = setup
    r = invoke_cli("generate", "--model", model, "--prompt", "hello there", "-n", 3, "--device", "cpu",
                   "--kv-dtype", "fp8")
    assert r.exit_code == 0, r.output
    assert "fp8 KV" in _flat(r.output)
    r = invoke_cli("compress", "--model", model, "--pattern", tmp / "p.pattern.json", "--tokens", 512, "--seq-len", 128,
                   "--no-ppl", "--kv-dtype", "fp8", "--out", tmp / "art")
    assert r.exit_code == 0, r.output
    art = load_model(str(tmp / "art"))
    assert art.artifact["kv_dtype"] == "fp8" and art.kv_dtype == "fp8"
    r = invoke_cli("generate", "--model", tmp / "art", "--prompt", "hello there", "-n", 2, "--device", "cpu")
    assert r.exit_code == 0 and "fp8 KV" in _flat(r.output), r.output
    r = invoke_cli("generate", "--model", tmp / "art", "--prompt", "hello there", "-n", 2, "--device", "cpu",
                   "--kv-dtype", "bf16")
    assert r.exit_code == 0 and "bf16 KV" in _flat(r.output), r.output


def test_efficiency_rows_with_fp8_caches_read_half_the_kv_bytes(setup):
    tmp, model = setup
    res = {}
    for kv in ("bf16", "fp8"):
        out = tmp / f"eff_{kv}.json"
        r = invoke_cli("bench", "efficiency", "--model", model, "--device", "cpu",
                       "--contexts", "128", "--attention", "full,duo", "--pattern", tmp / "p.pattern.json", "--peers",
                       "none", "--chunk", 64, "--decode-tokens", 2, "--kv-dtype", kv, "--out", out)
        assert r.exit_code == 0, r.output
        res[kv] = {row["mode"]: row for row in json.loads(out.read_text())["rows"]}
    d = load_model(str(model)).geometry.head_dim
    for mode in ("full", "duo"):  # fp32 on the CPU: fp8 + a bf16 scale per vector is (d + 2) / 4d of it
        assert res["fp8"][mode]["kv_bytes"] == pytest.approx(res["bf16"][mode]["kv_bytes"] * (d + 2) / (4 * d))
        assert res["fp8"][mode]["kv_read_bytes"] < res["bf16"][mode]["kv_read_bytes"] / 2


@pytest.mark.parametrize("args, text", [
    (("bench", "ppl", "--kv-dtype", "fp4"), "--kv-dtype 'fp4': choose one of bf16, fp8"),
    (("compress", "--kv-dtype", "int8", "--out", "/tmp/never"), "--kv-dtype 'int8'"),
    (("bench", "efficiency", "--device", "cpu", "--kv-dtype", "e5m2"), "--kv-dtype 'e5m2'"),
])
def test_bad_kv_dtypes_are_refused_with_the_fix(setup, args, text):
    tmp, model = setup
    extra = ("--model", model, "--device", "cpu") if args[0] != "bench" or args[1] != "efficiency" else ("--model", model)
    if args[0] == "compress":
        extra = ("--model", model)
    r = invoke_cli(*args, *extra)
    assert r.exit_code != 0 and text in _flat(r.output), r.output
    assert "Traceback" not in r.output
