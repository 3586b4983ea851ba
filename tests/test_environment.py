"""The three dependency lists cannot drift apart.

pyproject.toml says what the package needs (ranges, for readers with any torch >= 2.3);
requirements-ci.txt pins the set CI installs; environment.yml gives conda users (and Binder) that same
pinned set. A dependency added to one of them only, or a pin outside pyproject's range, fails here.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def normalize(name: str) -> str:
    """PEP 503 name normalisation: Scikit_Learn, scikit.learn and scikit-learn are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement_lines(lines) -> dict[str, Requirement]:
    """Requirement lines -> {normalised name: Requirement}; skips comments, blanks and pip options."""
    reqs: dict[str, Requirement] = {}
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("-"):
            continue
        req = Requirement(line)
        name = normalize(req.name)
        assert name not in reqs, f"{name} is listed twice"
        reqs[name] = req
    return reqs


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def pyproject_requirements() -> dict[str, Requirement]:
    """Runtime dependencies plus the [book] and [dev] extras; the project's own name is skipped."""
    project = pyproject()["project"]
    extras = project.get("optional-dependencies", {})
    lines = list(project["dependencies"]) + list(extras.get("book", [])) + list(extras.get("dev", []))
    own = normalize(project["name"])
    return {n: r for n, r in parse_requirement_lines(lines).items() if n != own}


def ci_requirements() -> dict[str, Requirement]:
    return parse_requirement_lines((ROOT / "requirements-ci.txt").read_text(encoding="utf-8").splitlines())


def conda_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def conda_pip_lines(env: dict) -> list[str]:
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one `pip:` section"
    return list(pip_sections[0])


def conda_requirements() -> dict[str, Requirement]:
    return parse_requirement_lines(conda_pip_lines(conda_env()))


def missing_from(needed: dict[str, Requirement], listed: dict[str, Requirement]) -> list[str]:
    return sorted(set(needed) - set(listed))


def pins_outside_range(needed: dict[str, Requirement], pinned: dict[str, Requirement]) -> list[str]:
    """Packages whose exact pin (==X) does not satisfy pyproject's range."""
    bad = []
    for name, req in needed.items():
        pin = pinned.get(name)
        if pin is None:
            continue
        exact = [s.version for s in pin.specifier if s.operator == "=="]
        if exact and not req.specifier.contains(exact[0], prereleases=True):
            bad.append(f"{name}=={exact[0]} is outside pyproject's '{req.specifier}'")
    return bad


def test_every_pyproject_dependency_is_pinned_for_ci():
    missing = missing_from(pyproject_requirements(), ci_requirements())
    assert not missing, f"in pyproject.toml but not in requirements-ci.txt: {missing}"


def test_every_pyproject_dependency_is_in_the_conda_environment():
    missing = missing_from(pyproject_requirements(), conda_requirements())
    assert not missing, f"in pyproject.toml but not in environment.yml: {missing}"


def test_conda_environment_pins_exactly_the_ci_set():
    ci = {n: str(r.specifier) for n, r in ci_requirements().items()}
    conda = {n: str(r.specifier) for n, r in conda_requirements().items()}
    only_ci = sorted(set(ci) - set(conda))
    only_conda = sorted(set(conda) - set(ci))
    differ = sorted(f"{n}: ci '{ci[n]}' vs conda '{conda[n]}'" for n in set(ci) & set(conda) if ci[n] != conda[n])
    assert not (only_ci or only_conda or differ), (
        f"requirements-ci.txt and environment.yml disagree: only in CI {only_ci}, "
        f"only in environment.yml {only_conda}, different pins {differ}")


def test_ci_pins_satisfy_pyproject_ranges():
    bad = pins_outside_range(pyproject_requirements(), ci_requirements())
    assert not bad, "; ".join(bad)


def test_torch_is_pinned_exactly_everywhere_it_is_installed():
    # A bare or ranged torch lets pip pick a multi-GB CUDA build instead of the pinned one.
    for where, reqs in (("requirements-ci.txt", ci_requirements()), ("environment.yml", conda_requirements())):
        ops = [s.operator for s in reqs["torch"].specifier]
        assert ops == ["=="], f"{where}: torch must be pinned with ==, got '{reqs['torch'].specifier}'"


def test_no_torchvision_next_to_the_pinned_torch():
    # torchvision 0.28 fails to import next to torch 2.13.0+cpu (operator torchvision::nms missing).
    for where, reqs in (("pyproject.toml", pyproject_requirements()), ("requirements-ci.txt", ci_requirements()),
                        ("environment.yml", conda_requirements())):
        assert "torchvision" not in reqs, f"{where} lists torchvision"


def test_conda_environment_installs_python_311_and_the_package_itself():
    env = conda_env()
    assert env["name"] == "glide-minimal"
    plain = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in plain and "pip" in plain, plain
    assert "-e ." in conda_pip_lines(env), "environment.yml must install the package (`-e .` under pip:)"


def test_drift_check_reports_a_dependency_added_in_one_place_only():
    # The checks above can fail: a dependency added to pyproject only is reported by name,
    # and a pin outside the range is reported too.
    needed = dict(ci_requirements())
    needed["brand-new-lib"] = Requirement("Brand_New.Lib>=1")
    assert missing_from(needed, ci_requirements()) == ["brand-new-lib"]
    bad = pins_outside_range({"numpy": Requirement("numpy>=99")}, ci_requirements())
    assert len(bad) == 1 and bad[0].startswith("numpy==") and "'>=99'" in bad[0], bad


# ---- a plain install (issue 18): the wheel carries the shipped checkpoints -------------------------------

def load_script(path: Path, name: str):
    """A repository script as a module, without running its __main__ block (setup.py's setup() call)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_registry(folder: Path, files: dict[str, bytes]) -> dict:
    """A MANIFEST.json over `files` ({name: weights bytes}), each with a config JSON, in folder."""
    import hashlib

    folder.mkdir(parents=True)
    entries = {}
    for name, payload in files.items():
        (folder / f"{name}.safetensors").write_bytes(payload)
        (folder / f"{name}.json").write_text("{}\n")
        entries[name] = {"file": f"{name}.safetensors", "config": f"{name}.json",
                         "sha256": hashlib.sha256(payload).hexdigest(),
                         "config_sha256": hashlib.sha256(b"{}\n").hexdigest(), "command": f"make {name}"}
    (folder / "MANIFEST.json").write_text(json.dumps({"checkpoints": entries}, indent=2) + "\n")
    return entries


def test_the_build_copies_exactly_the_manifest_files_after_their_sha256_check(tmp_path):
    setup = load_script(ROOT / "setup.py", "glide_minimal_setup")
    source = tmp_path / "data" / "checkpoints"
    write_registry(source, {"a": b"weights of a", "b": b"weights of b"})
    (source / "notes.txt").write_text("not in the MANIFEST: stays out of the wheel\n")
    target = tmp_path / "build" / "lib" / "glide_minimal" / "_data" / "checkpoints"
    # a model with a learned BPE names its tokenizer file too
    manifest = json.loads((source / "MANIFEST.json").read_text())
    (source / "b.tokenizer.json").write_text('{"model": {}}\n')
    manifest["checkpoints"]["b"].update(tokenizer="b.tokenizer.json",
                                        tokenizer_sha256=hashlib.sha256(b'{"model": {}}\n').hexdigest())
    (source / "MANIFEST.json").write_text(json.dumps(manifest))
    copied = setup.copy_checkpoints(source, target)
    assert sorted(p.name for p in copied) == ["MANIFEST.json", "a.json", "a.safetensors", "b.json", "b.safetensors",
                                              "b.tokenizer.json"]
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in copied)
    assert (target / "a.safetensors").read_bytes() == b"weights of a"
    (source / "b.tokenizer.json").write_text("changed\n")
    with pytest.raises(SystemExit, match="b.tokenizer.json does not match the sha256"):
        setup.copy_checkpoints(source, tmp_path / "again")


def test_the_build_refuses_a_file_that_fails_its_sha256_or_is_missing(tmp_path):
    setup = load_script(ROOT / "setup.py", "glide_minimal_setup")
    source = tmp_path / "checkpoints"
    write_registry(source, {"a": b"weights of a"})
    (source / "a.safetensors").write_bytes(b"weights of A")
    with pytest.raises(SystemExit, match=r"a\.safetensors does not match the sha256 .* re-run make a"):
        setup.checkpoint_files(source)
    (source / "a.safetensors").unlink()
    with pytest.raises(SystemExit, match=r"a\.safetensors \('a' in .*MANIFEST\.json\) is missing"):
        setup.checkpoint_files(source)
    (source / "MANIFEST.json").write_text('{"checkpoints": {\n  "a": {,\n}}\n')
    with pytest.raises(SystemExit, match=r"MANIFEST\.json is not valid JSON: line 2"):
        setup.checkpoint_files(source)
    with pytest.raises(SystemExit, match="is missing: a wheel without the shipped checkpoints"):
        setup.checkpoint_files(tmp_path / "nowhere")


def test_the_shipped_checkpoints_pass_the_build_check():
    setup = load_script(ROOT / "setup.py", "glide_minimal_setup")
    files = setup.checkpoint_files(ROOT / "data" / "checkpoints")
    manifest = json.loads((ROOT / "data" / "checkpoints" / "MANIFEST.json").read_text())["checkpoints"]
    tokenizers = sum("tokenizer" in entry for entry in manifest.values())  # learned BPEs (chapter 9)
    assert len(files) == 1 + 2 * len(manifest) + tokenizers
    assert not [f for f in files if f.endswith((".ipynb", ".pt", ".ckpt"))]


def test_the_build_hook_is_wired_and_the_sdist_carries_the_checkpoints():
    setup_py = (ROOT / "setup.py").read_text()
    assert 'cmdclass={"build_py": build_py_with_checkpoints}' in setup_py
    assert pyproject()["build-system"]["build-backend"] == "setuptools.build_meta"
    manifest_in = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert "graft data/checkpoints" in manifest_in and "include setup.py" in manifest_in


def test_an_installed_torch_in_range_satisfies_the_package():
    # pip keeps a torch that satisfies the requirement: no upper bound, no exact pin, no local-version pin
    torch = pyproject_requirements()["torch"]
    assert all(s.operator == ">=" for s in torch.specifier), torch
    for installed in ("2.3.0", "2.13.0+cpu", "2.13.0", "3.0.0"):
        assert torch.specifier.contains(installed, prereleases=True), installed


def test_readme_quick_start_names_only_shipped_pipelines_and_ci_runs_it():
    check = load_script(ROOT / "scripts" / "check_wheel.py", "check_wheel")
    snippet = check.quick_start((ROOT / "README.md").read_text())
    compile(snippet, "README quick start", "exec")
    names = re.findall(r'load_pipeline\("([^"]+)"\)', snippet)
    assert "tutorial-ddpm" in names and "tutorial-inpaint" in names
    shipped = set(json.loads((ROOT / "data" / "checkpoints" / "MANIFEST.json").read_text())["checkpoints"])
    aliases = {"tutorial-inpaint": "tutorial-text"}  # glide_minimal.pipelines.INPAINT_GROUPS
    assert not [n for n in names if aliases.get(n, n) not in shipped], names
    assert "make wheel-check" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^wheel-check:.*\n\t.*scripts/check_wheel\.py", (ROOT / "Makefile").read_text(), re.M)
    assert check.torch_pin((ROOT / "requirements-ci.txt").read_text()) == "torch==2.13.0"


def test_readme_documents_the_install_and_the_lookup_order():
    readme = (ROOT / "README.md").read_text()
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in readme
    assert re.search(r"The wheel .* is \d+ MB", readme, re.S)
    order = re.search(r"^### Where checkpoints come from\n(.*?)(?=^#)", readme, re.M | re.S).group(1)
    items = re.findall(r"^(\d)\. (.*)", order, re.M)
    assert [n for n, _ in items] == ["1", "2", "3", "4"]
    for (_, text), needle in zip(items, ("$GLIDE_MINIMAL_CHECKPOINTS", "$GLIDE_MINIMAL_CACHE", "_data/checkpoints",
                                         "data/checkpoints")):
        assert needle in text, (needle, text)
    assert readme.count("### Where checkpoints come from") == 1


def test_lint_runs_in_make_test_and_pre_commit_uses_the_pinned_ruff():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\tstage lint; stage test-unit;", makefile, re.M), "make test must run the lint stage first"
    assert re.search(r"^lint: venv\n\t\$\(BIN\)/ruff check ", makefile, re.M), "make lint must fail when ruff does"
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    ruff_repo = next(r for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit"))
    assert ruff_repo["rev"] == f"v{ci_requirements()['ruff'].specifier}".replace("==", "")
    assert "ruff" in pyproject()["tool"]  # the settings both read
