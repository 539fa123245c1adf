"""The release: a wheel that builds cleanly, ships its prompts and review app, installs and runs elsewhere;
extras named consistently with the install hints the code prints."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
SHIPPED_VERSION = str(yaml.safe_load((REPO / "prompts" / "policy.yaml").read_text(encoding="utf-8"))["version"])


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]).lower()


def _closure(names: set[str]) -> set[str]:
    """Installed distributions these pull in (their own requirements, transitively)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def _extra(extra: str) -> set[str]:
    """What ``pip install 'kuaimod_open[extra]'`` installs, by name (self-references resolved)."""
    names: set[str] = set()
    for req in EXTRAS[extra]:
        if _name(req) == "kuaimod-open":
            for inner in re.search(r"\[(.*)\]", req).group(1).split(","):  # type: ignore[union-attr]
                names |= _extra(inner.strip())
        else:
            names.add(_name(req))
    return names


def _require_calls() -> list[tuple[str, str, str, str]]:
    """Every ``require(module, extra=..., package=...)`` in the package and the app: (where, module, extra, dist)."""
    found = []
    for path in [*(REPO / "kuaimod_open").rglob("*.py"), *(REPO / "app").rglob("*.py")]:
        if "kuaimod_open/app" in path.as_posix():
            continue  # the link to app/, read once
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
                module = node.args[0].value  # type: ignore[attr-defined]
                kwargs = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
                found.append(
                    (f"{path.relative_to(REPO)}:{node.lineno}", module, kwargs["extra"], kwargs.get("package"))
                )
    return found


def test_every_install_hint_names_an_extra_that_installs_the_package():
    """`keyframes.py` said [video] for PyAV while av was only in [asr]: the hint must install what is missing."""
    top_level = metadata.packages_distributions()
    calls = _require_calls()
    assert len(calls) >= 30
    wrong = []
    for where, module, extra, package in calls:
        assert extra in EXTRAS, f"{where}: no extra named {extra!r}"
        dists = {_name(package)} if package else {_name(d) for d in top_level.get(module.split(".")[0], [])}
        assert dists, f"{where}: {module} is not installed here, cannot check"
        if not dists & _closure(_extra(extra)):
            wrong.append(f"{where}: {module} ({', '.join(sorted(dists))}) is not installed by [{extra}]")
    assert not wrong, "\n".join(wrong)


def test_extras_named_in_messages_and_docs_exist():
    texts = [p for p in REPO.rglob("*") if p.suffix in (".py", ".md", ".sh") and ".venv" not in p.parts]
    named = {
        (p.name, m)
        for p in texts
        if p.is_file()
        for m in re.findall(r"kuaimod_open\[([a-z_,]+)\]", p.read_text(encoding="utf-8", errors="ignore"))
    }
    unknown = [(f, e) for f, m in named for e in m.split(",") if e not in EXTRAS and e != "extra"]
    assert not unknown


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, built from this checkout without build isolation (no network), and the build log."""
    out = tmp_path_factory.mktemp("dist")
    build = tmp_path_factory.mktemp("build")
    # Build from a copy of the checkout's files (as a clean clone has them): setuptools writes build/ and
    # *.egg-info into the source folder.
    source = tmp_path_factory.mktemp("source") / "kuaimod_open"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        src, dst = REPO / name, source / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(build)},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = out.glob("kuaimod_open-*.whl")
    return path, result.stdout + result.stderr


@pytest.mark.slow
def test_the_wheel_builds_without_warnings_and_ships_prompts_and_the_app(wheel):
    path, log = wheel
    warnings = [line.strip() for line in log.splitlines() if re.search(r"Warning\b|absent from the", line)]
    assert not warnings, "\n".join(warnings[:10])
    names = zipfile.ZipFile(path).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"kuaimod_open", path.name.split("-py3")[0] + ".dist-info"}, top  # no top-level "app" package
    for shipped in ("prompts/policy.yaml", "prompts/moderation.md", "prompts/tag2cot.md", "app/__init__.py",
                    "app/server.py", "data/paper_results.json", "py.typed"):  # fmt: skip
        assert f"kuaimod_open/{shipped}" in names, shipped
    entry = zipfile.ZipFile(path).read(path.name.split("-py3")[0] + ".dist-info/entry_points.txt").decode()
    assert "kuaimod = kuaimod_open.cli:main" in entry


@pytest.mark.slow
def test_a_non_editable_install_runs_from_another_directory_with_the_default_policy(wheel, tmp_path):
    path, _ = wheel
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(path)],
        check=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KUAIMOD_PROMPTS_DIR"}
    env["PYTHONPATH"] = str(target)  # the installed copy first; the checkout is not on the path at all
    script = (
        "import kuaimod_open, kuaimod_open.app\n"
        "from kuaimod_open.judge.policy import default_policy_path, load_policy\n"
        "from kuaimod_open.judge.prompt import load_template\n"
        "print(kuaimod_open.__file__); print(kuaimod_open.app.__file__)\n"
        "print(load_policy(default_policy_path()).version, load_template().digest)\n"
        "import sys; assert 'torch' not in sys.modules and 'gradio' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    package, app, versions = result.stdout.splitlines()
    assert package.startswith(str(target)) and app.startswith(str(target / "kuaimod_open" / "app"))
    assert versions.split()[0] == SHIPPED_VERSION
    cli = subprocess.run(
        [str(target / "bin" / "kuaimod"), "--version"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert cli.returncode == 0 and "kuaimod" in cli.stdout, cli.stderr
    shipped = target / "kuaimod_open" / "prompts" / "policy.yaml"
    assert shipped.is_file() and not shipped.is_symlink()  # real files in the install, not a link to a checkout
    validate = subprocess.run([str(target / "bin" / "kuaimod"), "policy", "validate", str(shipped)], cwd=elsewhere,
                              env=env, capture_output=True, text=True)  # fmt: skip
    assert validate.returncode == 0 and f"ok (version {SHIPPED_VERSION}" in validate.stdout, validate.stderr


def _torch_choice(tmp_path: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh"), "--torch-choice"],
        env={**os.environ, "KUAIMOD_TORCH": "auto", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_setup_takes_the_cpu_build_of_torch_on_a_machine_without_a_gpu_when_the_index_answers(tmp_path):
    """Before: the CUDA build (15 nvidia-* packages, triton; a 7.8 GB venv) on every CPU-only machine."""
    import http.server
    import threading

    if os.uname().sysname != "Linux" or os.uname().machine != "x86_64":
        pytest.skip("PyPI's torch is the CUDA build only on Linux x86_64")
    no_gpu = tmp_path / "no-gpu"
    no_gpu.mkdir()
    (no_gpu / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # a driver tool that finds no GPU
    (no_gpu / "nvidia-smi").chmod(0o755)
    path = f"{no_gpu}:{os.environ['PATH']}"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"  # any answer counts, even a 404
        assert _torch_choice(tmp_path, {"PATH": path, "KUAIMOD_TORCH_INDEX": index}) == "cpu: no NVIDIA GPU here"
    finally:
        server.shutdown()
    offline = _torch_choice(tmp_path, {"PATH": path, "KUAIMOD_TORCH_INDEX": "https://index.kuaimod-test.invalid/cpu"})
    assert offline.startswith("pypi: no NVIDIA GPU here, but https://index.kuaimod-test.invalid/cpu did not answer")

    gpu = tmp_path / "gpu"
    gpu.mkdir()
    (gpu / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-0)'\n")
    (gpu / "nvidia-smi").chmod(0o755)
    with_gpu = _torch_choice(tmp_path, {"PATH": f"{gpu}:{os.environ['PATH']}", "KUAIMOD_TORCH_INDEX": index})
    assert with_gpu == "pypi: an NVIDIA GPU is present"
