"""Compile cpu_decode.cpp for this machine's own ISA, once, into the cache directory.

`-march=native` picks the AVX-512, AVX2 or portable branch of the source. The library is keyed by the
source, the compiler and the CPU's flags, so a changed file or another CPU model builds anew; a build
takes about two seconds. No compiler, or a failed build: None, and the caller keeps the torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_decode.cpp")
# -fno-math-errno lets `omp simd` loops call the vector expf (glibc's libmvec); nothing reads errno
FLAGS = ("-O3", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC", "-std=c++17")
DISABLE_ENV = "RTSERVE_CPU_KERNELS"  # "0": never build or load them


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return os.uname().machine


def _library_path(cache_dir: Path, compiler: str, march: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        "\n".join([SOURCE.read_text(), " ".join(FLAGS), march, version, _cpu_flags()]).encode()
    ).hexdigest()[:16]
    return cache_dir / "kernels" / f"cpu_decode-{march}-{key}.so"


def load_cpu_kernels(cache_dir: Path, march: str = "native") -> ctypes.CDLL | None:
    """The compiled kernel library, built first if needed; None where it cannot be. `march`: another
    target than this CPU's own (the tests build the AVX2 and portable branches this way)."""
    if os.environ.get(DISABLE_ENV) == "0":
        return None
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        log.warning("no C++ compiler found: the LLM decodes with torch ops")
        return None
    import torch  # noqa: F401  (its OpenMP runtime must be loaded first, so the library shares it)

    target = _library_path(cache_dir, compiler, march)
    try:
        if not target.exists() and not _build(compiler, march, target):
            return None
        return ctypes.CDLL(str(target))
    except OSError as error:  # an unwritable cache directory, a library the loader refuses
        log.warning("the CPU decode kernels are unavailable (%s); torch ops instead", error)
        return None


def _build(compiler: str, march: str, target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run(
            [compiler, *FLAGS, f"-march={march}", str(SOURCE), "-o", str(built)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            log.warning(
                "building the CPU decode kernels failed; torch ops instead:\n%s", result.stderr[-2000:]
            )
            return False
        os.replace(built, target)  # atomic: a concurrent builder's copy is identical
    return True
