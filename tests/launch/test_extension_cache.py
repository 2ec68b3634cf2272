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
