"""Packaging. The C++/CUDA extension is built here only when asked (ADAMW_TAU_BUILD_EXT=1);
otherwise adamw_tau compiles it with ninja at first use (adamw_tau/launch/extension.py)."""
import os

from setuptools import find_packages, setup

# Found, not listed: a subpackage added later is in the wheel without an edit here. triton_kernels/
# and csrc/ sit beside the package and are mapped into it (pyproject.toml's package-dir).
packages = find_packages(include=["adamw_tau", "adamw_tau.*"]) + ["adamw_tau.triton_kernels", "adamw_tau.csrc"]

ext_modules, cmdclass = [], {}
if os.environ.get("ADAMW_TAU_BUILD_EXT") == "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    here = os.path.dirname(os.path.abspath(__file__))
    srcs = [os.path.join("csrc", f) for f in ("ops.cpp", "adamw_cpu.cpp", "stream_cpu.cpp", "grad_norm_cpu.cpp")]
    import sys
    sys.path.insert(0, here)
    from adamw_tau.launch.extension import CXX_FLAGS as cxx, NVCC_FLAGS, toolkit_problem  # noqa: E402

    problem = toolkit_problem()
    if problem is None:
        ext_modules = [CUDAExtension("adamw_tau._C", srcs + ["csrc/adamw_cuda.cu"],
                                     extra_compile_args={"cxx": cxx, "nvcc": NVCC_FLAGS},
                                     extra_link_args=["-fopenmp"])]
    else:
        print(f"adamw_tau: building the CPU extension only ({problem})")
        ext_modules = [CppExtension("adamw_tau._C", srcs, extra_compile_args={"cxx": cxx},
                                    extra_link_args=["-fopenmp"])]
    cmdclass = {"build_ext": BuildExtension}

setup(packages=packages, ext_modules=ext_modules, cmdclass=cmdclass)
