"""`sedpa push` / `sedpa pull` and `--model ORG/NAME`, end to end against a fake Hub (issue 7).

The Hub cannot be reached from the test machines, so `tests/hubstub.py` serves the endpoints
huggingface_hub really calls (create repo, branch, preupload, NDJSON commit, tree, repo info,
file resolve, README YAML validation) from memory on 127.0.0.1. huggingface_hub runs unmodified
against it; what the stub does not cover (LFS/Xet uploads, real auth, rate limits) is listed there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny, random_pattern
from hubstub import HubStub, closed_port_url, point_huggingface_hub_at
from sedpa_compress.artifact.hub import NO_TOKEN
from sedpa_compress.calibration.stats import CalibrateConfig
from sedpa_compress.cli import app
from sedpa_compress.models import load_model
from sedpa_compress.svd.compress import CompressConfig
from sedpa_compress.svd.run import CompressJob, run_compress

TOKEN = "hf_stub_write_token"
REPO = "sedpa-test/tiny-llama-sedpa"
runner = CliRunner()


def sedpa(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result) -> str:
    """A user error: exit 2, one line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    err = result.stderr.strip()
    assert err.startswith("error:") and "Traceback" not in result.output, err
    return " ".join(err.split())


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hub-art")
    loaded = load_model(str(build_tiny("llama", tmp / "model")))
    random_pattern(loaded.geometry).save(tmp / "p.pattern.json")
    run_compress(loaded, CompressJob(out=tmp / "art", pattern=tmp / "p.pattern.json", measure_ppl=False,
                                     compress=CompressConfig(rank_ratio=0.7),
                                     calibrate=CalibrateConfig(tokens=512, seq_len=64)), show_progress=False)
    return tmp / "art"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubStub(token=TOKEN) as stub:
        point_huggingface_hub_at(monkeypatch, stub.url, tmp_path / "hf", token=TOKEN)
        yield stub
        assert not stub.unhandled, f"huggingface_hub called endpoints the stub lacks: {stub.unhandled}"


def logits(model_spec: str) -> torch.Tensor:
    loaded = load_model(model_spec)
    with torch.no_grad():
        return loaded.model(torch.arange(3, 40).unsqueeze(0)).logits


def test_push_pull_load_gives_the_same_logits(hub, artifact):
    r = sedpa("push", artifact, "--repo-id", REPO, "--commit-message", "first")
    assert r.exit_code == 0, r.output
    remote = hub.files(REPO)
    local = {p.name for p in artifact.iterdir()}
    assert set(remote) == local | {".gitattributes"}
    assert remote["model.safetensors"] == (artifact / "model.safetensors").read_bytes()
    assert f"sedpa generate --model {REPO}" in remote["README.md"].decode()  # the pushed card names the repo
    assert hub.repos[REPO].commits[hub.repos[REPO].branches["main"]].message == "first"

    r = sedpa("pull", REPO)
    assert r.exit_code == 0, r.output
    pulled = Path(r.stdout.strip().splitlines()[-1])
    assert pulled.is_dir() and str(pulled).startswith(os.environ["HF_HUB_CACHE"])
    assert (pulled / "modeling_sedpa.py").is_file() and (pulled / "sedpa_pattern.png").is_file()

    served = len(hub.requests)
    assert torch.equal(logits(REPO), logits(str(artifact)))  # --model ORG/NAME: the pulled artifact, from the cache
    assert len(hub.requests) == served, "a pulled artifact loads without touching the network"
    loaded = load_model(REPO)
    assert loaded.source == "artifact" and loaded.artifact["rank_ratio"] == 0.7


def test_model_org_name_downloads_an_artifact_without_pull(hub, artifact):
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0
    assert torch.equal(logits(REPO), logits(str(artifact)))


def test_repush_deletes_stale_files_and_skips_unchanged_ones(hub, artifact):
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0
    repo = hub.repos[REPO]
    head = repo.commits[repo.branches["main"]]
    head.files["model-00001-of-00002.safetensors"] = b"stale shard from an older push"
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0
    assert "model-00001-of-00002.safetensors" not in hub.files(REPO)
    head = repo.branches["main"]
    commits = len(repo.commits)
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0
    assert repo.branches["main"] == head and len(repo.commits) == commits  # nothing changed: no empty commit


def test_push_results_adds_measured_tables_to_the_pushed_card_only(hub, artifact, tmp_path):
    from sedpa_compress.bench.results import make_result, write_result

    niah = tmp_path / "niah_tiny.json"
    write_result(niah, make_result("niah", model=REPO, device="cpu", settings={}, rows=[],
                                   summary={"full": {"accuracy": 1.0}, "sedpa-s": {"accuracy": 0.5}}))
    r = sedpa("push", artifact, "--repo-id", REPO, "--results", niah)
    assert r.exit_code == 0, r.output
    remote = hub.files(REPO)
    card = remote["README.md"].decode()
    assert "## Measured results" in card and "| sedpa-s | 0.5 |" in card
    assert json.loads(remote["manifest.json"])["files"]["results/niah_tiny.json"]["bytes"] == niah.stat().st_size
    assert not (artifact / "results").exists() and "Measured results" not in (artifact / "README.md").read_text()
    requests = len(hub.requests)
    niah.write_text("{broken")
    assert "is not valid JSON" in one_line_error(sedpa("push", artifact, "--repo-id", REPO, "--results", niah))
    assert len(hub.requests) == requests  # refused before any request


def test_revision_pushes_to_a_branch_and_pulls_it(hub, artifact):
    r = sedpa("push", artifact, "--repo-id", REPO, "--revision", "rank-0.7")
    assert r.exit_code == 0, r.output
    assert "README.md" not in hub.files(REPO, "main") and "README.md" in hub.files(REPO, "rank-0.7")
    r = sedpa("pull", REPO, "--revision", "rank-0.7")
    assert r.exit_code == 0, r.output
    assert (Path(r.stdout.strip().splitlines()[-1]) / "manifest.json").is_file()
    err = one_line_error(sedpa("pull", REPO, "--revision", "no-such-branch"))
    assert "has no revision 'no-such-branch'" in err


def test_private_repo_is_invisible_without_a_token(hub, artifact, monkeypatch):
    assert sedpa("push", artifact, "--repo-id", REPO, "--private").exit_code == 0
    assert hub.repos[REPO].private
    monkeypatch.delenv("HF_TOKEN")
    err = one_line_error(sedpa("pull", REPO))
    assert "no such repository" in err and "private" in err


def test_model_org_name_at_revision_loads_that_branch(hub, artifact):
    """`--model ORG/NAME@REV` (every command) loads the revision `sedpa pull --revision` fetched."""
    from sedpa_compress.errors import SedpaError

    assert sedpa("push", artifact, "--repo-id", REPO, "--revision", "rank-0.7").exit_code == 0
    assert torch.equal(logits(f"{REPO}@rank-0.7"), logits(str(artifact)))
    with pytest.raises(SedpaError, match="has no revision 'nope'"):
        load_model(f"{REPO}@nope")
    with pytest.raises(SedpaError, match="give it once"):
        load_model(f"{REPO}@rank-0.7", revision="main")


def test_pull_of_a_base_model_skips_weights_sedpa_does_not_load(hub, tmp_path):
    base = build_tiny("qwen2", tmp_path / "base")
    files = {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    hub.add_repo("sedpa-test/tiny-base", {**files, "pytorch_model.bin": b"a pickle sedpa never loads",
                                          "original/consolidated.00.pth": b"another"})
    r = sedpa("pull", "sedpa-test/tiny-base")
    assert r.exit_code == 0, r.output
    pulled = Path(r.stdout.strip().splitlines()[-1])
    assert {p.name for p in pulled.rglob("*") if p.is_file()} == set(files)
    assert torch.equal(logits("sedpa-test/tiny-base"), logits(str(base)))


def test_pull_of_a_repo_without_config_is_one_line(hub):
    from sedpa_compress.errors import SedpaError

    hub.add_repo("sedpa-test/a-dataset", {"data.txt": b"not a model"})
    err = one_line_error(sedpa("pull", "sedpa-test/a-dataset"))
    assert "has no config.json" in err
    with pytest.raises(SedpaError, match="that Hub repo has no config.json"):
        load_model("sedpa-test/a-dataset")


def test_pull_of_a_missing_repo_is_one_line(hub):
    err = one_line_error(sedpa("pull", "sedpa-test/nothing-here"))
    assert "sedpa-test/nothing-here: no such repository" in err


def test_no_token_is_refused_before_any_request(hub, artifact, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    err = one_line_error(sedpa("push", artifact, "--repo-id", REPO))
    assert err == f"error: {NO_TOKEN}"
    assert hub.requests == []


def test_stored_login_token_is_used(hub, artifact, monkeypatch):
    """`huggingface-cli login` stores the token in HF_HOME/token; push finds it there."""
    monkeypatch.delenv("HF_TOKEN")
    import huggingface_hub.constants as C

    Path(C.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(C.HF_TOKEN_PATH).write_text(TOKEN)
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0


@pytest.mark.parametrize("bad", ["no-namespace", "a/b/c", "org/", "/name", "org/na me", "org/-dash", "org/a..b",
                                 "org/name.", "org--x/y", "org/" + "n" * 97])
def test_malformed_repo_id_is_one_line(hub, artifact, bad):
    err = one_line_error(sedpa("push", artifact, "--repo-id", bad))
    assert "is not a Hub repo id ORG/NAME" in err
    assert hub.requests == []


def test_malformed_pull_id_and_revision(hub, artifact):
    assert "is not a Hub repo id" in one_line_error(sedpa("pull", "not a repo"))
    assert "not a valid branch name" in one_line_error(sedpa("push", artifact, "--repo-id", REPO, "--revision", "a..b"))
    assert hub.requests == []


def test_artifact_failing_its_manifest_is_refused_before_any_request(hub, artifact, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    err = one_line_error(sedpa("push", bad, "--repo-id", REPO))
    assert "refusing to push" in err and "fails its sha256" in err
    (bad / "manifest.json").unlink()
    assert "has no manifest.json" in one_line_error(sedpa("push", bad, "--repo-id", REPO))
    assert "not a sedpa artifact" in one_line_error(sedpa("push", tmp_path, "--repo-id", REPO))
    assert hub.requests == []


def test_wrong_token_and_forbidden_namespace(monkeypatch, tmp_path, artifact):
    with HubStub(token=TOKEN, namespaces={"sedpa-test"}) as stub:
        point_huggingface_hub_at(monkeypatch, stub.url, tmp_path / "hf", token="hf_wrong")
        assert "rejected the token (401" in one_line_error(sedpa("push", artifact, "--repo-id", REPO))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        err = one_line_error(sedpa("push", artifact, "--repo-id", "someone-else/x"))
        assert "403 Forbidden" in err and "write access" in err
        assert not stub.repos


def test_network_unreachable_is_one_line(monkeypatch, tmp_path, artifact):
    url = closed_port_url()
    point_huggingface_hub_at(monkeypatch, url, tmp_path / "hf", token=TOKEN)
    err = one_line_error(sedpa("push", artifact, "--repo-id", REPO))
    assert f"cannot reach the Hugging Face Hub at {url}" in err
    started = time.monotonic()
    err = one_line_error(sedpa("pull", REPO))
    assert f"cannot reach the Hugging Face Hub at {url}" in err
    assert time.monotonic() - started < 15, "pull must fail fast, not sit in huggingface_hub's HEAD retries (~23 s)"


def _cache_snapshot(root: Path) -> tuple[Path, Path]:
    """The Hub cache layout: models--ORG--NAME/{blobs, snapshots/<commit>}, snapshot files symlinked into blobs/."""
    repo = root / "models--org--name"
    blobs, snap = repo / "blobs", repo / "snapshots" / ("c" * 40)
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (blobs / "aa").write_text("weights")
    (snap / "a.txt").symlink_to(Path("../../blobs/aa"))  # relative, as huggingface_hub writes them
    return snap, blobs


def test_manifest_accepts_hub_cache_symlinks_and_refuses_escapes(tmp_path):
    from sedpa_compress.artifact.manifest import artifact_file, verify_manifest, write_manifest
    from sedpa_compress.errors import SedpaError

    snap, _ = _cache_snapshot(tmp_path / "cache")
    write_manifest(snap)
    verify_manifest(snap)  # symlinks into the repo's blobs/ are the cache's own layout

    # A user-made artifact whose file is a symlink to somewhere outside it is refused...
    art = tmp_path / "art"
    art.mkdir()
    (tmp_path / "secret").write_text("not yours")
    (art / "a.txt").symlink_to(tmp_path / "secret")
    write_manifest(art)
    with pytest.raises(SedpaError, match="outside the artifact"):
        verify_manifest(art)
    # ... and so is a snapshot-shaped directory whose symlink leaves its blobs/.
    (snap / "b.txt").symlink_to(tmp_path / "secret")
    write_manifest(snap)
    with pytest.raises(SedpaError, match="outside the artifact"):
        verify_manifest(snap)
    for name in ("../secret", "/etc/passwd", "x/../../secret", "..", ""):
        assert artifact_file(art, name) is None, name
    assert artifact_file(art, "./sub/../a.txt") is None  # a.txt leaves the artifact through its symlink
    (art / "ok.txt").write_text("fine")
    assert artifact_file(art, "sub/../ok.txt") == art / "ok.txt"


def test_pull_into_the_default_symlinked_cache_loads(monkeypatch, tmp_path, artifact):
    with HubStub(token=TOKEN) as stub:
        point_huggingface_hub_at(monkeypatch, stub.url, tmp_path / "hf", token=TOKEN, symlinks=True)
        assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0
        r = sedpa("pull", REPO)
        assert r.exit_code == 0, r.output
        assert (Path(r.stdout.strip().splitlines()[-1]) / "model.safetensors").is_symlink()
        assert torch.equal(logits(REPO), logits(str(artifact)))


def test_cli_push_in_a_fresh_process_reads_hf_endpoint_and_hf_token(tmp_path, artifact):
    """No monkeypatching: a real `python -m sedpa_compress push` configured only by the environment."""
    with HubStub(token=TOKEN) as stub:
        env = {**os.environ, "HF_ENDPOINT": stub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1", "NO_COLOR": "1", "COLUMNS": "200"}
        env.pop("HF_HUB_OFFLINE", None)
        r = subprocess.run([sys.executable, "-m", "sedpa_compress", "push", str(artifact), "--repo-id", REPO],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert f"{stub.url}/{REPO}" in r.stdout
        assert json.loads(stub.files(REPO)["manifest.json"])["files"]["model.safetensors"]["bytes"] > 0


# ------------------------------------------------------------------ issue 17: the trust boundary


def test_push_token_is_not_in_the_config_repr(artifact):
    from sedpa_compress.artifact.hub import PushConfig

    config = PushConfig(artifact=artifact, repo_id=REPO, token="hf_secret_value")
    assert "hf_secret_value" not in repr(config) and "hf_secret_value" not in str(config)


def test_push_uploads_exactly_the_manifest_files(hub, artifact, tmp_path):
    """A symlink to a file elsewhere on disk, or any other file the manifest does not list, is refused
    before any request (it used to be staged through the link and uploaded); a `.gitattributes` the
    artifact carries (a pulled snapshot) is neither listed nor uploaded."""
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    secret = tmp_path / "secret.txt"
    secret.write_text("a private file elsewhere on disk")
    (art / "notes.txt").symlink_to(secret)
    err = one_line_error(sedpa("push", art, "--repo-id", REPO))
    assert "'notes.txt'" in err and "does not list" in err
    assert hub.requests == []
    (art / "notes.txt").unlink()
    (art / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    assert sedpa("push", art, "--repo-id", REPO).exit_code == 0
    remote = hub.files(REPO)
    listed = json.loads(remote["manifest.json"])["files"]
    assert set(remote) == set(listed) | {"manifest.json", ".gitattributes"}
    assert remote[".gitattributes"] != (art / ".gitattributes").read_bytes()  # the Hub's own, not the local one
    assert set(listed) == set(json.loads((artifact / "manifest.json").read_text())["files"])


def test_push_to_an_existing_repo_that_is_not_an_artifact_needs_force(hub, artifact):
    hub.add_repo("sedpa-test/someones-model", {"config.json": b"{}", "pytorch_model.bin": b"their weights"})
    requests = len(hub.requests)
    err = one_line_error(sedpa("push", artifact, "--repo-id", "sedpa-test/someones-model"))
    assert "is not a sedpa artifact" in err and "--force" in err and "delete" in err
    assert "pytorch_model.bin" in hub.files("sedpa-test/someones-model")
    assert not any(m == "POST" for m, _ in hub.requests[requests:]), "a refused push wrote to the Hub"
    # a new branch of that repo replaces nothing on main: allowed without --force
    assert sedpa("push", artifact, "--repo-id", "sedpa-test/someones-model", "--revision", "sedpa").exit_code == 0
    assert "pytorch_model.bin" in hub.files("sedpa-test/someones-model")
    r = sedpa("push", artifact, "--repo-id", "sedpa-test/someones-model", "--force")
    assert r.exit_code == 0, r.output
    assert "pytorch_model.bin" not in hub.files("sedpa-test/someones-model")
    assert sedpa("push", artifact, "--repo-id", "sedpa-test/someones-model").exit_code == 0  # now a sedpa repo


def test_private_on_an_existing_public_repo_is_refused_not_ignored(hub, artifact):
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0
    err = one_line_error(sedpa("push", artifact, "--repo-id", REPO, "--private"))
    assert "is public" in err and "--private" in err
    assert not hub.repos[REPO].private
    hub.add_repo("sedpa-test/secret", {}, private=True)
    assert sedpa("push", artifact, "--repo-id", "sedpa-test/secret", "--private").exit_code == 0
    assert hub.repos["sedpa-test/secret"].private


def test_push_pins_the_commit_it_looked_at(hub, artifact):
    """A push landing between sedpa's look at the branch and its commit: the Hub refuses the commit
    (parent_commit), so files nobody looked at are never deleted."""
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0

    def concurrent_push(method, path):  # after sedpa looked at the branch, before it lists what to delete
        if method == "GET" and "/tree/" in path and hub.on_request is not None:
            hub.on_request = None
            hub.add_repo(REPO, {"their-file.txt": b"pushed meanwhile"})

    hub.on_request = concurrent_push
    art_readme = (artifact / "README.md").read_text()
    r = sedpa("push", artifact, "--repo-id", REPO, "-m", "second")
    assert "changed while sedpa was pushing" in one_line_error(r)
    assert "their-file.txt" in hub.files(REPO)
    assert (artifact / "README.md").read_text() == art_readme


def test_pull_takes_every_file_from_one_commit(hub, artifact):
    """A push landing while `sedpa pull` downloads: config, manifest and weights all come from the
    commit pull resolved first (it used to resolve the branch twice and could mix two commits)."""
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0
    first = hub.repos[REPO].branches["main"]

    def concurrent_push(method, path):
        if "/resolve/" in path and path.endswith("/config.json") and hub.on_request is not None:
            hub.on_request = None
            hub.add_repo(REPO, {"model.safetensors": b"weights of a later push"})

    hub.on_request = concurrent_push
    r = sedpa("pull", REPO)
    assert r.exit_code == 0, r.output
    pulled = Path(r.stdout.strip().splitlines()[-1])
    assert pulled.name == first and hub.repos[REPO].branches["main"] != first
    assert (pulled / "model.safetensors").read_bytes() == (artifact / "model.safetensors").read_bytes()
    assert torch.equal(logits(REPO), logits(str(artifact)))  # refs/main records the commit pulled: offline load


def test_pull_downloads_only_the_manifest_files(hub, artifact):
    assert sedpa("push", artifact, "--repo-id", REPO).exit_code == 0
    hub.add_repo(REPO, {"pytorch_model.bin": b"a pickle added on the Hub", "notes/extra.md": b"not in the manifest"})
    r = sedpa("pull", REPO)
    assert r.exit_code == 0, r.output
    pulled = Path(r.stdout.strip().splitlines()[-1])
    got = {p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file()}
    assert got == set(json.loads((artifact / "manifest.json").read_text())["files"]) | {"manifest.json"}


def test_base_model_pull_takes_only_the_shards_its_index_names(hub, tmp_path):
    base = build_tiny("qwen2", tmp_path / "base")
    files = {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    weights = files.pop("model.safetensors")
    index = {"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors"
                                            for k in __import__("safetensors.torch").torch.load(weights)}}
    files.update({"model-00001-of-00001.safetensors": weights, "model.safetensors.index.json": json.dumps(index).encode(),
                  "consolidated.safetensors": b"a duplicate of the weights in another layout", "modeling_x.py": b"code"})
    hub.add_repo("sedpa-test/sharded-base", files)
    r = sedpa("pull", "sedpa-test/sharded-base")
    assert r.exit_code == 0, r.output
    pulled = Path(r.stdout.strip().splitlines()[-1])
    got = {p.name for p in pulled.rglob("*") if p.is_file()}
    assert "consolidated.safetensors" not in got and "modeling_x.py" not in got
    assert {"config.json", "model.safetensors.index.json", "model-00001-of-00001.safetensors"} <= got
    assert torch.equal(logits("sedpa-test/sharded-base"), logits(str(base)))


def test_push_staging_is_cleaned_like_other_partial_outputs(hub, artifact, tmp_path):
    """A killed push leaves `.ART.push-pid<N>-*` beside the artifact; the next push removes it. An artifact
    in the Hub cache is staged outside `snapshots/` (which must hold only snapshots)."""
    art = tmp_path / "art"
    shutil.copytree(artifact, art)
    stale = tmp_path / ".art.push-pid999999999-abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half a staged copy")
    assert sedpa("push", art, "--repo-id", REPO).exit_code == 0
    assert not stale.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".art.")] == []

    r = sedpa("pull", REPO)
    snapshot = Path(r.stdout.strip().splitlines()[-1])
    seen = []
    real_mkdtemp = __import__("tempfile").mkdtemp

    def spy(*a, **k):
        seen.append(k.get("dir"))
        return real_mkdtemp(*a, **k)

    import tempfile

    original, tempfile.mkdtemp = tempfile.mkdtemp, spy
    try:
        assert sedpa("push", snapshot, "--repo-id", "sedpa-test/copy").exit_code == 0
    finally:
        tempfile.mkdtemp = original
    assert seen and all(Path(d) != snapshot.parent for d in seen)
    assert sorted(p.name for p in snapshot.parent.iterdir()) == [snapshot.name]
