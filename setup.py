"""Build script: the C++ CPU kernels as `smdim_kernels._C` (skipped with SMDIM_SKIP_NATIVE=1)."""
import glob
import os

from setuptools import setup

NATIVE_SKIP_VAR = "SMDIM_SKIP_NATIVE"


def native_extensions():
    if os.environ.get(NATIVE_SKIP_VAR, "0") not in ("", "0"):
        print(f"{NATIVE_SKIP_VAR} is set: building without the C++ kernels (reference paths only).")
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    # Portable flags: wider SIMD (AVX2, AVX-512) is compiled per file via target pragmas
    # and chosen at run time, so the wheel runs on any x86-64 (and builds elsewhere).
    extra_cflags = ["-O3", "-g0", "-std=c++17", "-fopenmp", "-Wno-psabi", "-fno-math-errno"]
    ext = CppExtension(
        name="smdim_kernels._C",
        sources=sources,
        extra_compile_args={"cxx": extra_cflags},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = native_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
