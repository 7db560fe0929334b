"""The native modules of the hot path (see docs/performance.md): the protocol's FEC and
AES-GCM, the link's batched receive, and the filters' value scans; everything else is
declared in pyproject.toml.
Building needs a C compiler, the Python headers and OpenSSL 3's (libssl-dev on Debian);
running needs libcrypto.so.3 (libssl3)."""

from setuptools import Extension, setup

FLAGS = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit", "-Wno-unused-parameter"]
# Each module includes appliance/_pymodule.h (the module and type boilerplate they share);
# depends= rebuilds them when it changes.
COMMON = {"extra_compile_args": FLAGS, "include_dirs": ["appliance"],
          "depends": ["appliance/_pymodule.h"]}

setup(
    ext_modules=[
        Extension("appliance.protocol._native", sources=["appliance/protocol/_native.c"],
                  libraries=["crypto"], **COMMON),
        Extension("appliance.link._recvmmsg", sources=["appliance/link/_recvmmsg.c"], **COMMON),
        Extension("appliance._scan", sources=["appliance/_scan.c"], **COMMON),
    ]
)
