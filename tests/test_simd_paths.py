"""Every SIMD path the compiler may pick is tested, on any machine: the main build is
`-march=native` (AVX-512 on some CPUs, AVX2 on others, NEON on ARM), so the op tests alone
exercise only this machine's path. Here the CPU kernels are rebuilt for the other x86-64
levels this CPU can run, each in its own folder, and the numerical op tests run against each
build in a subprocess:

    x86-64-v2   no AVX: at::vec's generic Vectorized and every scalar loop
    x86-64-v3   AVX2 + FMA without AVX-512 (only where the native build has AVX-512; elsewhere
                the native build is this one)

Builds are cached by the content of csrc/, setup.py, the flags, torch's version and the
compiler (under $GPT_KERNELS_TEST_CACHE, default ~/.cache/gpt-pretrain/simd), so a rerun
without changes costs only the tests. A cold build takes 1-3 minutes per variant on 2 cores.
On ARM the native build is the only one (the kernels have no NEON-specific code).
"""
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys

import pytest
import torch

import gpt_kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("GPT_KERNELS_TEST_CACHE",
                       os.path.join(os.path.expanduser("~"), ".cache", "gpt-pretrain", "simd"))
# every op's tests (tests/test_<op>.py, by that convention) and the model on the fused kernels
OP_TEST_FILES = [f"tests/test_{op}.py" for op in gpt_kernels.OPS] + ["tests/test_ext_model.py"]
# the numerical tests; compile, opcheck, gradcheck (float64) and argument checks do not depend
# on the SIMD level, the largest 16-bit cross-entropy shape takes a minute per build, and the
# training comparison runs gpt_pretrain.py, which imports the checkout's own build
DESELECT = ("not compile and not opcheck and not gradcheck and not bad_input and not 1269x32000 "
            "and not training_with_ext")


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def variants():
    """(-march level, the SIMD the build must report) for each level this CPU runs that the
    native build is not."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    native = set(gpt_kernels._C.SIMD.split())
    flags = cpu_flags()
    out = [("x86-64-v2", "")]
    if "avx512f" in native and {"avx2", "fma"} <= flags:
        out.append(("x86-64-v3", "avx2 fma"))
    return out


def build(march):
    """The CPU-only extension compiled with -march=MARCH, as a gpt_kernels package in its own
    folder (returned); built once per content hash."""
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(ROOT, "csrc", "*.*"))) + [os.path.join(ROOT, "setup.py")]:
        with open(path, "rb") as f:
            digest.update(path.encode() + f.read())
    compiler = subprocess.run([os.environ.get("CXX", "c++"), "--version"], capture_output=True, text=True).stdout
    digest.update(f"{march} {torch.__version__} {sys.version} {compiler}".encode())
    folder = os.path.join(CACHE, f"{march}-{digest.hexdigest()[:16]}")
    package = os.path.join(folder, "lib", "gpt_kernels")
    if not glob.glob(os.path.join(package, "_C*.so")):
        shutil.rmtree(folder, ignore_errors=True)
        env = {**os.environ, "GPT_KERNELS_CUDA": "0", "GPT_KERNELS_MARCH": march,
               "GPT_KERNELS_REQUIRED": "1", "MAX_JOBS": str(os.cpu_count() or 2)}
        run = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib",
                              os.path.join(folder, "lib"), "--build-temp", os.path.join(folder, "tmp")],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        assert run.returncode == 0, f"the -march={march} build failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        shutil.rmtree(os.path.join(folder, "tmp"), ignore_errors=True)
    for py in glob.glob(os.path.join(ROOT, "gpt_kernels", "*.py")):  # the current Python half
        shutil.copy(py, package)
    return os.path.join(folder, "lib")


@pytest.mark.slow
@pytest.mark.parametrize("march,simd", variants())
def test_op_tests_pass_on_every_simd_level(march, simd):
    lib = build(march)
    env = {**os.environ, "GPT_KERNELS_EXPECT_BUILD": lib}
    probe = subprocess.run([sys.executable, "-c", "import gpt_kernels; print(gpt_kernels._C.SIMD)"],
                           cwd=lib, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == simd, f"-march={march} built for '{probe.stdout.strip()}', expected '{simd}'"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-o", f"pythonpath={lib}", "-m", "not cuda", "-k", DESELECT,
                          *OP_TEST_FILES], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1800)
    tail = "\n".join(run.stdout.splitlines()[-40:])
    assert run.returncode == 0, f"op tests against the -march={march} build failed:\n{tail}\n{run.stderr[-2000:]}"
    assert " passed" in tail
