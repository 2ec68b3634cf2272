"""The wheel holds the whole package: built from the tracked files, installed (not editable) into a
fresh venv, every module imports from the venv and every CLI command answers --help, run from a
folder outside the checkout. The venv sees this interpreter's packages (torch, numpy, ...) through a
.pth file, so nothing is downloaded."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from adamw_tau import cli

ROOT = Path(__file__).resolve().parent.parent
# folders that setuptools maps into the package (pyproject.toml's package-dir)
MAPPED = {"triton_kernels": "adamw_tau.triton_kernels", "csrc": "adamw_tau.csrc"}
WALK = """
import json, importlib, pkgutil, sys
import adamw_tau
files, failed = {"adamw_tau": adamw_tau.__file__}, {}
def record(name):
    failed[name] = repr(sys.exc_info()[1])
for info in pkgutil.walk_packages(adamw_tau.__path__, "adamw_tau.", onerror=record):
    try:
        files[info.name] = importlib.import_module(info.name).__file__
    except Exception as e:
        failed[info.name] = repr(e)
print(json.dumps({"files": files, "failed": failed}))
"""


def _run(args, **kw):
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out.stdout


def _source_modules() -> set[str]:
    """Every module of the checkout, by the name it has once installed."""
    names = set()
    for folder, package in [("adamw_tau", "adamw_tau"), *MAPPED.items()]:
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.add(".".join([package, *parts]))
    return names


def _tracked_copy(dest: Path) -> Path:
    """The files a clean clone has (git's tracked files; the whole tree less build output without git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        files = [f for f in listed.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__"))
        return dest
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


def _outer_site_dirs() -> list[str]:
    """This interpreter's package folders (never the checkout), for the venv's .pth file."""
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs |= {p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
    return sorted(d for d in dirs if os.path.isdir(d) and Path(d).resolve() != ROOT)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = _tracked_copy(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
          str(tmp / "dist"), str(src)])
    (wheel,) = (tmp / "dist").glob("adamw_tau-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "outer_env.pth").write_text("".join(d + "\n" for d in _outer_site_dirs()))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    work = tmp / "elsewhere"
    work.mkdir()
    return dict(wheel=wheel, venv=venv, site=site, python=python, env=env, cwd=work)


@pytest.mark.slow
def test_the_wheel_holds_the_sources_and_kernels(installed):
    import zipfile
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for folder, package in MAPPED.items():
        for path in (ROOT / folder).iterdir():
            if path.suffix in (".h", ".cpp", ".cu", ".py"):
                assert f"{package.replace('.', '/')}/{path.name}" in names, f"{folder}/{path.name} is not in the wheel"
    assert any(n.startswith("adamw_tau/csrc/") and n.endswith(".cu") for n in names)
    assert "adamw_tau/triton_kernels/adamw_fused.py" in names


@pytest.mark.slow
def test_every_module_imports_from_the_installed_wheel(installed):
    got = json.loads(_run([str(installed["python"]), "-c", WALK], cwd=installed["cwd"], env=installed["env"])
                     .strip().splitlines()[-1])
    assert got["failed"] == {}
    missing = _source_modules() - set(got["files"])
    assert not missing, f"modules of the checkout that the wheel does not install: {sorted(missing)}"
    site = installed["site"].resolve()
    elsewhere = {n: f for n, f in got["files"].items() if site not in Path(f).resolve().parents}
    assert not elsewhere, f"imported from outside the venv: {elsewhere}"


def _commands() -> list[list[str]]:
    sub = next(a for a in cli.parser()._actions if a.dest == "command")
    return [[]] + [[name] for name in sub.choices]


@pytest.mark.slow
@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "adamw-tau")
def test_every_cli_command_answers_help(installed, command):
    script = installed["venv"] / "bin" / "adamw-tau"
    out = _run([str(script), *command, "--help"], cwd=installed["cwd"], env=installed["env"])
    assert out.startswith(f"usage: {' '.join(['adamw-tau', *command])}")
