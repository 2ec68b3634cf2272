"""The JIT build is cached under a name keyed by what it was compiled for."""
from adamw_tau.launch import extension


def test_the_cuda_build_name_follows_the_gpu_arch(monkeypatch):
    names = {}
    for arch in ("8.0", "9.0", "9.0"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch)
        names.setdefault(arch, set()).add(extension.build_name.__wrapped__(True))
    assert len(names["9.0"]) == 1  # the same arch, the same cache
    assert names["8.0"] != names["9.0"]  # another GPU never loads a build without code for it


def test_the_cpu_build_name_follows_the_cpu(monkeypatch):
    a = extension.build_name.__wrapped__(False)
    monkeypatch.setattr(extension, "_cpu_model", lambda: "another CPU")
    b = extension.build_name.__wrapped__(False)
    assert a != b and a.startswith("adamw_tau_cpu_") and b.startswith("adamw_tau_cpu_")


def test_the_build_name_follows_the_torch_install(monkeypatch):
    """Two environments with different torch installs keep a build each, not one folder rebuilt in turn."""
    import torch.utils.cpp_extension as cpp
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")  # the CUDA name without a GPU
    for cuda in (False, True):
        base = extension.build_name.__wrapped__(cuda)
        assert extension.build_name.__wrapped__(cuda) == base  # the same install, the same cache
        with monkeypatch.context() as m:
            m.setattr(extension.torch, "__version__", "2.99.0+other")
            assert extension.build_name.__wrapped__(cuda) != base
        with monkeypatch.context() as m:
            m.setattr(cpp, "include_paths", lambda device_type="cpu": ["/another/venv/torch/include"])
            assert extension.build_name.__wrapped__(cuda) != base
        with monkeypatch.context() as m:
            m.setattr(extension, "JIT_CXX_FLAGS", extension.JIT_CXX_FLAGS + ["-DANOTHER"])
            assert extension.build_name.__wrapped__(cuda) != base
        with monkeypatch.context() as m:
            m.setattr(extension, "CSRC", extension.CSRC.parent / "another_checkout" / "csrc")
            assert extension.build_name.__wrapped__(cuda) != base


def _ninja_folder(tmp_path, name="adamw_tau_cpu_x"):
    """A build folder as torch's load leaves it: build.ninja, its output library, ninja's log."""
    import subprocess
    src = tmp_path / "source.cpp"
    src.write_text("int x;\n")
    (tmp_path / "build.ninja").write_text(f"rule cp\n  command = cp $in $out\nbuild {name}.so: cp {src}\n")
    subprocess.run(["ninja"], cwd=tmp_path, check=True, capture_output=True)
    return src


def test_a_build_is_pending_whenever_ninja_has_work(tmp_path):
    import os
    import shutil
    if shutil.which("ninja") is None:
        import pytest
        pytest.skip("no ninja binary")  # the extension itself cannot build then either
    name = "adamw_tau_cpu_x"
    assert extension.build_pending(str(tmp_path), name)  # an empty folder: a first build
    src = _ninja_folder(tmp_path, name)
    assert not extension.build_pending(str(tmp_path), name)  # built and up to date: no notice
    later = os.stat(tmp_path / f"{name}.so").st_mtime + 10
    os.utime(src, (later, later))  # a source (or a torch header) newer than the library: ninja rebuilds
    assert extension.build_pending(str(tmp_path), name)
    os.utime(src, (later - 20, later - 20))
    assert not extension.build_pending(str(tmp_path), name)
    (tmp_path / f"{name}.so").unlink()  # the library gone, build.ninja left
    assert extension.build_pending(str(tmp_path), name)


def test_the_notice_is_printed_when_a_build_starts_in_a_used_folder(monkeypatch, capsys):
    """The notice follows build_pending, not whether the folder is new."""
    import torch.utils.cpp_extension as cpp
    loads = []
    monkeypatch.setattr(extension, "_registered", lambda key: False)
    monkeypatch.setattr(extension, "_compiler_problem", lambda: None)
    monkeypatch.setattr(cpp, "load", lambda **kw: loads.append(kw["name"]))
    for pending in (True, False):
        monkeypatch.setattr(extension, "build_pending", lambda d, n: pending)
        extension._load.cache_clear()
        try:
            assert extension._load(False) is None
        finally:
            extension._load.cache_clear()
        assert ("compiling the CPU extension" in capsys.readouterr().err) == pending
    assert loads == [extension.build_name(False)] * 2
