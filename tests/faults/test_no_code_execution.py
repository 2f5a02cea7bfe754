"""Nothing sedpa loads can run code: no pickle (torch.load only with weights_only=True), no eval/exec, YAML
only through safe_load, transformers never with trust_remote_code=True. Checked two ways: statically over
the package source (ast, so comments and docstrings do not count), and by feeding sedpa files that would
run code if they were unpickled or imported — the marker file they would write must never appear."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from faults.harness import REPO, TALLY, refused

PACKAGE = REPO / "sedpa_compress"
# Code that sedpa copies into artifacts for plain-transformers users (who opt in with trust_remote_code);
# sedpa itself never imports it from an artifact.
SHIPPED_NOT_RUN = {PACKAGE / "artifact" / "remote_code" / "modeling_sedpa.py"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a constant>"
    return "<absent>"


def _violations(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"):
                    found.append(f"{where}:{node.lineno}: imports {name}")
    for call in _calls(tree):
        name = _dotted(call.func)
        line = f"{where}:{call.lineno}"
        if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
            found.append(f"{line}: calls {name}()")
        if name == "torch.load" and _keyword(call, "weights_only") is not True:
            found.append(f"{line}: torch.load without weights_only=True")
        if name.startswith(("pickle.", "numpy.load", "np.load")) and _keyword(call, "allow_pickle") is not False:
            found.append(f"{line}: {name}()")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
            found.append(f"{line}: {name}() (use yaml.safe_load)")
        if any(kw.arg == "trust_remote_code" for kw in call.keywords) and _keyword(call, "trust_remote_code") is not False:
            found.append(f"{line}: {name}(trust_remote_code={_keyword(call, 'trust_remote_code')})")
        if (name.endswith((".from_pretrained", ".from_config")) and name.split(".")[-2].startswith("Auto")
                and _keyword(call, "trust_remote_code") is not False):
            found.append(f"{line}: {name}() without trust_remote_code=False")
    return found


def test_the_package_source_has_no_way_to_run_loaded_code():
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if p not in SHIPPED_NOT_RUN]
    assert len(files) > 30
    found = [v for f in files for v in _violations(f)]
    assert found == [], "code paths that could execute what a file says:\n" + "\n".join(found)
    TALLY.fault("static check of every package file: pickle, eval/exec, yaml.load, torch.load without "
                "weights_only, transformers Auto* without trust_remote_code=False", "none found")


def test_the_static_check_catches_what_it_claims(tmp_path):
    """The scanner itself: each forbidden form is found (a check that finds nothing proves nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport torch, yaml\nfrom transformers import AutoModelForCausalLM as A\n"
                   "torch.load('x')\ntorch.load('x', weights_only=False)\neval('1')\nyaml.load('a')\n"
                   "AutoModelForCausalLM.from_pretrained('d')\nAutoConfig.from_pretrained('d', trust_remote_code=True)\n")
    found = _violations(bad, root=tmp_path)
    assert len(found) == 8, found  # the last line breaks two rules


class _Payload:
    """Unpickling this writes a marker file: proof that something executed the file's content."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _malicious_pickle(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"format": "x", "payload": _Payload(marker)}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    return path


def test_malicious_checkpoint_is_refused_not_run(world, tmp_path):
    """identify-heads --resume reads a checkpoint with torch.load(weights_only=True): a pickle that would
    run code is refused as unreadable."""
    marker = tmp_path / "EXECUTED"
    out = tmp_path / "h.pattern.json"
    _malicious_pickle(tmp_path / "h.identify-ckpt.pt", marker)
    refused("heads", "resume checkpoint that is a pickle which would run code",
            ["identify-heads", "--model", world.model, "--out", out, "--resume", "--sink", 4, "--recent", 16,
             "--context-min", 300, "--context-max", 360, "--num-passkeys", 1, "--steps", 2, "--device", "cpu"],
            "cannot be read")
    assert not marker.exists(), "a checkpoint's pickle ran"


def test_pickled_weights_in_a_model_dir_are_not_run(world, tmp_path):
    """A model directory whose weights are a malicious pytorch_model.bin (pickle) instead of safetensors."""
    import shutil

    marker = tmp_path / "EXECUTED"
    model = tmp_path / "model"
    shutil.copytree(world.model, model)
    for f in model.glob("*.safetensors*"):
        f.unlink()
    _malicious_pickle(model / "pytorch_model.bin", marker)
    message = refused("pipeline", "model directory whose weights are a pickle (pytorch_model.bin) that would run code",
                      ["generate", "--model", model, "--prompt", "hi", "--device", "cpu"], "safetensors")
    assert not marker.exists(), "a pickled weights file ran"
    assert message


@pytest.mark.parametrize("name", ["sedpa_pattern.json", "config.json"])
def test_python_beside_an_artifact_is_never_imported(world, tmp_path, name):
    """An artifact that ships its own modeling .py (as every sedpa artifact does, for transformers users)
    and a config whose auto_map points at a planted module: sedpa loads it with its own code only."""
    import json
    import shutil

    from sedpa_compress.artifact.manifest import write_manifest
    from sedpa_compress.models import load_model

    marker = tmp_path / "EXECUTED"
    art = shutil.copytree(world.artifact, tmp_path / "art")
    planted = f"open({str(marker)!r}, 'w').write('ran')\n"
    for py in art.glob("*.py"):
        py.write_text(planted + py.read_text())
    (art / "evil.py").write_text(planted)
    cfg = json.loads((art / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.Config", "AutoModelForCausalLM": "evil.Model"}
    (art / "config.json").write_text(json.dumps(cfg))
    write_manifest(art)
    loaded = load_model(str(art))
    assert loaded.source == "artifact"
    assert not marker.exists(), "sedpa imported Python shipped inside an artifact"
