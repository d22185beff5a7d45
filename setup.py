"""Build and install gpt-pretrain and its optional compiled kernels (the `gpt_kernels` package).

    pip install -e .            # CPU kernels always; CUDA kernels too when torch is a CUDA
                                # build and nvcc is found
    python setup.py build_ext --inplace   # fast rebuild while working on csrc/

The compiled extension is optional: when it cannot be built (no C++ compiler, a compiler that
rejects a flag, a failed compile), the install still succeeds and says why in one line; the
pure PyTorch path (--kernels torch) needs no extension, and --kernels ext then stops at start
with that reason. GPT_KERNELS_CUDA=1 or GPT_KERNELS_REQUIRED=1 make a failed build fail the
install instead.

Environment variables:
    GPT_KERNELS_CUDA=0|1      skip the CUDA kernels, or insist on them (fail if impossible);
                              unset: build them when possible
    GPT_KERNELS_REQUIRED=1    fail the install if the CPU kernels cannot be built
    GPT_KERNELS_NATIVE=0      compile for the baseline of the architecture, not -march=native
    GPT_KERNELS_MARCH=ARCH    compile with -march=ARCH instead (e.g. x86-64-v2: the scalar paths,
                              x86-64-v3: AVX2 without AVX-512; tests/test_simd_paths.py uses it)
    TORCH_CUDA_ARCH_LIST      GPU architectures to compile for (default "8.0;9.0" when no
                              GPU is visible; torch's own detection otherwise)
    CUDA_HOME                 the CUDA toolkit; found from nvcc or /usr/local/cuda when unset
    MAX_JOBS                  parallel compile jobs (ninja)

Layout (csrc/README.md): one stem per op. csrc/module.cpp declares every op; csrc/<op>.cpp is
its CPU kernel, csrc/cuda/<op>.cu its CUDA kernels (CUDA headers only: they compile in seconds)
and csrc/cuda/<op>_launcher.cpp the thin launcher that registers them with PyTorch. The sources
are found by these patterns (csrc/*.cpp; with CUDA also csrc/cuda/*.cpp and csrc/cuda/*.cu), so a
new op needs no change here.
"""
import copy
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """The CUDA toolkit folder, or None. torch guesses it from `which nvcc`, which is wrong
    when nvcc is a wrapper script (e.g. /usr/local/bin/nvcc exec'ing the real one)."""
    def is_toolkit(path):
        nvcc = os.path.join(path or "", "bin", "nvcc.exe" if sys.platform == "win32" else "nvcc")
        return path and os.path.exists(os.path.join(path, "include", "cuda_runtime.h")) \
            and os.path.exists(nvcc)

    for var in ("CUDA_HOME", "CUDA_PATH"):
        if is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if is_toolkit(home):
            return home
        try:  # a wrapper script: look for the real nvcc it runs
            with open(nvcc, errors="ignore") as f:
                for word in f.read().split():
                    if word.endswith("/bin/nvcc") and is_toolkit(os.path.dirname(os.path.dirname(word))):
                        return os.path.dirname(os.path.dirname(word))
        except OSError:
            pass
    for guess in ("/usr/local/cuda",):
        if is_toolkit(guess):
            return guess
    return None


def compiler_accepts(flags):
    """Whether the C++ compiler that will build the extension compiles and links a small OpenMP
    program with these flags (GCC and Clang on Linux do; Apple clang rejects -fopenmp; a machine
    may have no compiler at all)."""
    cxx = shlex.split(os.environ.get("CXX", "c++"))  # e.g. CXX="ccache g++"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("#include <cstdio>\nint main() {\n#pragma omp parallel\n  std::puts(\"\");\n}\n")
        try:
            run = subprocess.run([*cxx, *flags, src, "-o", os.path.join(tmp, "probe")],
                                 capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return run.returncode == 0


def host_compiler_flags():
    """(compile flags, link flags) for the CPU kernels: each GCC/Clang-only flag only where the
    compiler takes it. Without OpenMP the kernels build single-threaded (at::parallel_for runs
    its range in one call) rather than failing."""
    if sys.platform == "win32":  # MSVC
        return ["/O2", "/openmp"], []
    cxx_flags = ["-O3", "-Wall", "-Wno-unused-function"]
    link_flags = []
    if not compiler_accepts([]):
        print(f"gpt-pretrain: no working C++ compiler (CXX={os.environ.get('CXX', 'c++')}): the "
              "compiled kernels will not build.")
        return cxx_flags, link_flags
    if compiler_accepts(["-fopenmp"]):
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    else:
        print("gpt-pretrain: the C++ compiler does not take -fopenmp: the CPU kernels will run "
              "single-threaded.")
    # an editable build runs where it was built; GPT_KERNELS_NATIVE=0 for a portable build
    march = os.environ.get("GPT_KERNELS_MARCH")
    if march:
        if not compiler_accepts([f"-march={march}"]):
            sys.exit(f"gpt-pretrain: GPT_KERNELS_MARCH={march}, but the C++ compiler rejects -march={march}.")
        cxx_flags.append(f"-march={march}")
    elif os.environ.get("GPT_KERNELS_NATIVE", "1") == "1" and compiler_accepts(["-march=native"]):
        cxx_flags.append("-march=native")
    return cxx_flags, link_flags


def extensions():
    try:
        import torch
    except ImportError:
        sys.exit("gpt-pretrain: building the kernels needs torch installed first: pip install torch")

    mode = os.environ.get("GPT_KERNELS_CUDA", "auto").lower()
    cuda_home = find_cuda_home()
    build_cuda = mode not in ("0", "no", "false", "off")
    why_not = None
    if torch.version.cuda is None:
        why_not = f"torch {torch.__version__} is a CPU-only build"
    elif cuda_home is None:
        why_not = "no CUDA toolkit (nvcc) was found; set CUDA_HOME"
    if build_cuda and why_not:
        if mode in ("1", "yes", "true", "on"):
            sys.exit(f"gpt-pretrain: GPT_KERNELS_CUDA=1 but {why_not}.")
        print(f"gpt-pretrain: building CPU kernels only ({why_not}).")
        build_cuda = False
    if build_cuda:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # torch's arch detection crashes when no GPU is visible: Ampere and Hopper cubins, plus PTX that newer GPUs can compile
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        print(f"gpt-pretrain: building CPU and CUDA kernels (CUDA_HOME={cuda_home}, "
              f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', 'auto')}).")

    from torch.utils import cpp_extension

    cxx_flags, link_flags = host_compiler_flags()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    kwargs = dict(extra_compile_args={"cxx": list(cxx_flags)}, extra_link_args=link_flags)
    global CPU_ONLY_EXTENSION  # what a failed CUDA build falls back to
    CPU_ONLY_EXTENSION = cpp_extension.CppExtension("gpt_kernels._C", list(sources), **kwargs)
    if not build_cuda:
        return [CPU_ONLY_EXTENSION]

    kwargs = dict(extra_compile_args={"cxx": list(cxx_flags)}, extra_link_args=link_flags)
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    kwargs["extra_compile_args"]["cxx"].append("-DGPT_KERNELS_WITH_CUDA")
    kwargs["extra_compile_args"]["nvcc"] = ["-O3", "-lineinfo", "--expt-relaxed-constexpr",
                                            "-DGPT_KERNELS_WITH_CUDA"]
    # The minimal toolkit may lack library headers that torch's CUDA headers include; the
    # pip-installed nvidia packages carry them.
    include_dirs = []
    for site in sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cuda_runtime/include"):
            if os.path.isdir(os.path.join(site, sub)):
                include_dirs.append(os.path.join(site, sub))
    return [cpp_extension.CUDAExtension("gpt_kernels._C", sources, include_dirs=include_dirs,
                                        **kwargs)]


CPU_ONLY_EXTENSION = None


def build_ext_class():
    """torch's BuildExtension, made optional: a failed build of the kernels (after one retry
    without the CUDA kernels, when they were only wanted "if possible") removes any older
    library from the package, leaves the reason in gpt_kernels/_build_error.txt (gpt_kernels'
    ImportError quotes it) and lets the install go on, unless GPT_KERNELS_CUDA=1 or
    GPT_KERNELS_REQUIRED=1 insist on the kernels."""
    from torch.utils.cpp_extension import BuildExtension

    class OptionalBuildExtension(BuildExtension):
        def package_dir(self):
            # in place (--inplace, and editable installs, which copy the library into the
            # checkout) the package is the checkout's gpt_kernels/
            in_place = self.inplace or getattr(self, "editable_mode", False)
            return os.path.join(ROOT if in_place else self.build_lib, "gpt_kernels")

        def run(self):
            error_file = os.path.join(self.package_dir(), "_build_error.txt")
            if os.path.exists(error_file):
                os.remove(error_file)
            insist = os.environ.get("GPT_KERNELS_REQUIRED") == "1" or \
                os.environ.get("GPT_KERNELS_CUDA", "").lower() in ("1", "yes", "true", "on")
            try:
                super().run()
                return
            except Exception as e:  # compile, link or toolchain errors of any kind
                if insist:
                    raise
                error = e
            ext = self.extensions[0]
            if CPU_ONLY_EXTENSION is not None and any(src.endswith(".cu") for src in ext.sources):
                print(f"gpt-pretrain: the build with CUDA kernels failed ({error}); building the "
                      "CPU kernels alone.", file=sys.stderr)
                # the same (finalized) extension object, with the CPU-only sources and flags
                for attr in ("sources", "include_dirs", "library_dirs", "libraries",
                             "runtime_library_dirs", "define_macros", "extra_compile_args",
                             "extra_link_args"):
                    setattr(ext, attr, copy.deepcopy(getattr(CPU_ONLY_EXTENSION, attr)))
                try:
                    super().run()
                    return
                except Exception as e:
                    error = e
            for stale in glob.glob(os.path.join(self.package_dir(), "_C*.so")) + \
                    glob.glob(os.path.join(self.package_dir(), "_C*.pyd")):
                os.remove(stale)  # a library from an earlier build must not pass for this one
            reason = (" ".join(str(error).split()) or type(error).__name__).rstrip(".")
            reason += f" (C++ compiler: {os.environ.get('CXX', 'c++')})"
            os.makedirs(self.package_dir(), exist_ok=True)
            with open(error_file, "w") as f:
                f.write(reason + "\n")
            print(f"gpt-pretrain: the compiled kernels (gpt_kernels) could not be built: {reason}. "
                  "The install goes on without them: --kernels torch works; for --kernels ext, "
                  "fix the compiler error above and reinstall (pip install -e .), or set "
                  "GPT_KERNELS_REQUIRED=1 to make this an error.", file=sys.stderr)

    return OptionalBuildExtension.with_options(no_python_abi_suffix=True)


setup(
    name="gpt-pretrain",
    version="0.1.0",
    description="GPT pre-training you can read, run and speed up: one script, fused kernels, benchmarks",
    python_requires=">=3.9",
    packages=find_packages(include=["gpt_kernels"]),
    install_requires=["torch", "numpy", "tqdm", "tokenizers"],
    # transformers + safetensors: only --export-hf and --init-from need them (support/hf.py);
    # tensorboard, wandb: only --logger tensorboard / wandb
    extras_require={"test": ["pytest", "matplotlib", "transformers", "safetensors", "tensorboard", "wandb",
                             "datasets", "pyarrow"],
                    "plot": ["matplotlib"], "hf": ["transformers", "safetensors"],
                    "logging": ["tensorboard", "wandb"],
                    # data/prepare.py: --hf-dataset (datasets) and .parquet sources (pyarrow)
                    "data": ["datasets", "pyarrow"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": build_ext_class()},
)
