"""Builds the native package tsunagi._native from ext/ (Cython over C)."""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

EXT = Path("ext")
C_FLAGS = ["-O3", "-std=c11", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]


def native(name, *sources):
    return Extension(
        f"tsunagi._native.{name}",
        sources=[str(EXT / f"{name}.pyx"), *(str(EXT / s) for s in sources)],
        include_dirs=[str(EXT)],
        extra_compile_args=C_FLAGS,
        extra_link_args=["-pthread"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


extensions = [
    native("hashing", "sha256.c", "sha256_shani.c", "parallel.c", "pow.c"),
    native("commit", "commit_kernel.c", "sha256.c", "sha256_shani.c"),
    native("sigverify", "schnorr_batch.c", "bip340_batch.c", "parallel.c"),
    native("indexing", "index_kernel.c"),
    native("shamir", "shamir_kernel.c"),
    native("encoding"),
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=[str(EXT)],
        compiler_directives={"language_level": "3"},
    ),
)
