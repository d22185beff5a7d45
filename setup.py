"""Build and install gpt-pretrain and its optional compiled kernels (the `gpt_kernels` package).

    pip install -e .            # CPU kernels always; CUDA kernels too when torch is a CUDA
                                # build and nvcc is found
    python setup.py build_ext --inplace   # fast rebuild while working on csrc/

Environment variables:
    GPT_KERNELS_CUDA=0|1      skip the CUDA kernels, or insist on them (fail if impossible);
                              unset: build them when possible
    TORCH_CUDA_ARCH_LIST      GPU architectures to compile for (default "8.0;9.0" when no
                              GPU is visible; torch's own detection otherwise)
    CUDA_HOME                 the CUDA toolkit; found from nvcc or /usr/local/cuda when unset
    MAX_JOBS                  parallel compile jobs (ninja)

Layout: csrc/*.cpp are the op declarations and CPU kernels; csrc/cuda/*.cu are CUDA kernels
that include only CUDA headers (they compile in seconds), and csrc/cuda/*.cpp the thin
launchers that register them with PyTorch.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """The CUDA toolkit folder, or None. torch guesses it from `which nvcc`, which is wrong
    when nvcc is a wrapper script (e.g. /usr/local/bin/nvcc exec'ing the real one)."""
    def is_toolkit(path):
        return path and os.path.exists(os.path.join(path, "include", "cuda_runtime.h")) \
            and os.path.exists(os.path.join(path, "bin", "nvcc"))

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

    cxx_flags = ["-O3", "-fopenmp", "-Wall", "-Wno-unused-function"]
    if os.environ.get("GPT_KERNELS_NATIVE", "1") == "1":
        cxx_flags.append("-march=native")  # an editable build runs where it was built
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    kwargs = dict(extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])
    if not build_cuda:
        return [cpp_extension.CppExtension("gpt_kernels._C", sources, **kwargs)]

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


def build_ext_class():
    from torch.utils.cpp_extension import BuildExtension
    return BuildExtension.with_options(no_python_abi_suffix=True)


setup(
    name="gpt-pretrain",
    version="0.1.0",
    description="GPT pre-training you can read, run and speed up: one script, fused kernels, benchmarks",
    python_requires=">=3.9",
    packages=find_packages(include=["gpt_kernels"]),
    install_requires=["torch", "numpy", "tqdm", "tokenizers"],
    extras_require={"test": ["pytest", "matplotlib"], "plot": ["matplotlib"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": build_ext_class()},
)
