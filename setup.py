"""The one native module of the hot path (see docs/performance.md): everything else is
declared in pyproject.toml. Building needs a C compiler, the Python headers and
OpenSSL 3's (libssl-dev on Debian); running needs libcrypto.so.3 (libssl3)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "appliance.protocol._native",
            sources=["appliance/protocol/_native.c"],
            libraries=["crypto"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit",
                                "-Wno-unused-parameter"],
        )
    ]
)
