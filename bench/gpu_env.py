"""Stage 1 of bench/run_all.sh: what this GPU machine has, and whether the run can go on.

    python bench/gpu_env.py [--env-out FILE] [--device cpu]

Prints the versions (python, torch, torch.version.cuda, nvcc, the C++ compiler, ninja, the GPU
from torch and nvidia-smi, compute-sanitizer, ncu, cuobjdump), then checks what building the
extension against *this* python and torch needs (a lent machine has its own, not the ones the
repo was developed with: bench/GPU_NOTES.md): a CUDA build of torch that sees a GPU, an nvcc
whose CUDA major version matches torch's (torch.utils.cpp_extension refuses another), an nvcc
that targets this GPU's architecture, Python.h, ninja (without it torch compiles the 13 sources
one after another, far past the budget), a C++ compiler, and a torch new enough for the Python
half of the ops (torch.library.register_fake: 2.4). Then it builds bench/smoke/sanitizer_probe.cu
for this GPU and runs it plain (does nvcc's output run here?) and under compute-sanitizer: a
clean run (does the tool take the device? on gVisor it refuses it), a planted out-of-bounds
write (memcheck) and a planted shared-memory race (racecheck), each of which must be reported.

--device cpu is run_all.sh's self-check on a machine without a GPU: the versions and the build
checks for a CPU-only build, no GPU required, no probe.

Exit status 0: go on. 3: stop, after one line starting "STOP:" that says why and what to do.
--env-out writes the findings as shell assignments for run_all.sh to source: GPU_ARCH (e.g.
9.0, for TORCH_CUDA_ARCH_LIST), SANITIZER (the tool's path, empty when it cannot be used),
SANITIZER_OPTS, SANITIZER_NOTE, RACECHECK (1 when racecheck works), NCU, CUOBJDUMP, CUDA_HOME.
"""
import argparse
import glob
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "bench", "smoke", "sanitizer_probe.cu")
MIN_TORCH = (2, 4)  # torch.library.register_fake, used by gpt_kernels/*.py


def run(cmd, timeout=60):
    """(exit status, stdout + stderr); 127 when the program is missing, 124 on timeout."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)}: timed out after {timeout} s"


def find_tool(name, cuda_home):
    """A CUDA tool on PATH, in the toolkit, or under /opt/nvidia (where Nsight Compute lives)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = []
    if cuda_home:
        candidates += [os.path.join(cuda_home, "bin", name), os.path.join(cuda_home, "compute-sanitizer", name)]
    candidates += sorted(glob.glob(f"/usr/local/cuda*/bin/{name}"), reverse=True)
    candidates += sorted(glob.glob(f"/usr/local/cuda*/compute-sanitizer/{name}"), reverse=True)
    candidates += sorted(glob.glob(f"/opt/nvidia/*/{name}") + glob.glob(f"/opt/nvidia/*/*/{name}"), reverse=True)
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def find_cuda_home():
    """The toolkit folder, as setup.py finds it (CUDA_HOME, nvcc on PATH through a wrapper, /usr/local/cuda).

    A copy of setup.py's find_cuda_home: setup.py calls setup() when imported, so it cannot be
    imported from here, and moving the function into a module both import would put a new file
    on the build's path (pip builds through tools/build_backend.py; an sdist must carry it). Keep
    the two alike."""
    def is_toolkit(path):
        return bool(path) and os.path.exists(os.path.join(path, "bin", "nvcc")) \
            and os.path.exists(os.path.join(path, "include", "cuda_runtime.h"))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if is_toolkit(home):
            return home
        try:
            with open(nvcc, errors="ignore") as f:
                for word in f.read().split():
                    if word.endswith("/bin/nvcc") and is_toolkit(os.path.dirname(os.path.dirname(word))):
                        return os.path.dirname(os.path.dirname(word))
        except OSError:
            pass
    return "/usr/local/cuda" if is_toolkit("/usr/local/cuda") else None


def first_line(text, pattern=None):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if pattern:
        lines = [ln for ln in lines if re.search(pattern, ln, re.I)] or lines
    return lines[0][:200] if lines else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-out", help="write the findings here as shell assignments")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: check for a CPU-only build (run_all.sh's self-check)")
    args = parser.parse_args()
    env = {"GPU_ARCH": "", "SANITIZER": "", "SANITIZER_OPTS": "", "SANITIZER_NOTE": "", "RACECHECK": "0",
           "NCU": "", "CUOBJDUMP": "", "CUDA_HOME": ""}
    stops = []  # (why, what to do)

    def show(what, value):
        print(f"{what:18s} {value}", flush=True)

    def finish():
        if args.env_out:
            with open(args.env_out, "w") as f:
                f.writelines(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
        if stops:
            why, todo = stops[0]
            print(f"\nSTOP: {why}. {todo}", flush=True)
            for why, todo in stops[1:]:
                print(f"  also: {why}. {todo}")
            sys.exit(3)
        print("\nready: " + ("a CPU-only build (self-check)" if args.device == "cpu" else
                             "build for sm_" + env["GPU_ARCH"].replace(".", "")), flush=True)
        sys.exit(0)

    show("python", f"{platform.python_version()} ({sys.executable})")
    show("machine", f"{platform.machine()}, {os.cpu_count()} cores")
    try:
        import torch
    except ImportError as e:
        stops.append((f"torch does not import in {sys.executable} ({e})",
                      "Run with the python that holds torch: PYTHON=/path/to/python3 bash bench/run_all.sh"))
        finish()
    cuda_ok = torch.cuda.is_available()
    show("torch", f"{torch.__version__} (CUDA {torch.version.cuda}, cxx11 ABI "
                  f"{int(torch.compiled_with_cxx11_abi())}, {os.path.dirname(torch.__file__)})")
    rc, smi = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm",
                   "--format=csv,noheader"], timeout=30)
    show("nvidia-smi", smi if rc == 0 else f"not usable ({first_line(smi)})")
    if args.device == "cpu":
        pass  # the self-check needs no GPU
    elif torch.version.cuda is None:
        stops.append((f"no CUDA GPU visible: torch {torch.__version__} is a CPU-only build",
                      "Use a CUDA build of torch (PYTHON=... to pick another python)"))
    elif not cuda_ok or torch.cuda.device_count() == 0:
        stops.append(("no CUDA GPU visible to torch (torch.cuda.is_available() is False)",
                      "Run this on a machine with an NVIDIA GPU and its driver (nvidia-smi above)"))
    else:
        major, minor = torch.cuda.get_device_capability()
        env["GPU_ARCH"] = f"{major}.{minor}"
        props = torch.cuda.get_device_properties(0)
        show("GPU (torch)", f"{props.name}, capability {major}.{minor}, {props.multi_processor_count} SMs, "
                            f"{props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)")

    torch_version = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if torch_version < MIN_TORCH or not hasattr(torch.library, "register_fake"):
        stops.append((f"torch {torch.__version__} is older than gpt_kernels needs "
                      f"({'.'.join(map(str, MIN_TORCH))}: torch.library.register_fake)",
                      "Use torch >= 2.4 (PYTHON=... to pick another python)"))

    cuda_home = find_cuda_home()
    env["CUDA_HOME"] = cuda_home or ""
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
    nvcc_version = None
    if nvcc:
        rc, out = run([nvcc, "--version"])
        m = re.search(r"release (\d+)\.(\d+)", out)
        nvcc_version = (int(m.group(1)), int(m.group(2))) if m else None
        show("nvcc", f"{m.group(0) if m else first_line(out)} ({nvcc})")
    else:
        show("nvcc", "not found")
        if args.device == "cuda":
            stops.append(("no CUDA toolkit (nvcc) found", "Set CUDA_HOME to the toolkit folder"))
    if nvcc_version and torch.version.cuda and args.device == "cuda":
        torch_major = int(torch.version.cuda.split(".")[0])
        if nvcc_version[0] != torch_major:
            stops.append((f"nvcc is CUDA {nvcc_version[0]}.{nvcc_version[1]} but torch was built with CUDA "
                          f"{torch.version.cuda}: torch.utils.cpp_extension refuses a different major version",
                          f"Set CUDA_HOME to a CUDA {torch_major}.x toolkit, or use a torch built for CUDA "
                          f"{nvcc_version[0]}"))
    if nvcc and env["GPU_ARCH"]:
        rc, out = run([nvcc, "--list-gpu-arch"])
        arch = "compute_" + env["GPU_ARCH"].replace(".", "")
        if rc == 0 and arch not in out.split():
            stops.append((f"this nvcc cannot build for the GPU ({arch} is not in nvcc --list-gpu-arch)",
                          "Use a newer CUDA toolkit (CUDA_HOME)"))

    cxx = os.environ.get("CXX", "c++")
    rc, out = run([cxx, "--version"])
    show("C++ compiler", first_line(out) if rc == 0 else "not found")
    if rc != 0:
        stops.append((f"no C++ compiler ({cxx})", "Install g++ or set CXX"))
    python_h = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    show("Python.h", python_h if os.path.exists(python_h) else f"MISSING ({python_h})")
    if not os.path.exists(python_h):
        stops.append(("Python.h is missing, so no extension can be built for this python",
                      "Install the python development headers (python3-dev), or use another python"))
    if cuda_home:  # torch's cpp_extension looks for the toolkit at import, warning when it guesses
        os.environ.setdefault("CUDA_HOME", cuda_home)
    from torch.utils.cpp_extension import is_ninja_available
    ninja = is_ninja_available()
    show("ninja", shutil.which("ninja") or ("importable" if ninja else "not found"))
    if not ninja:
        stops.append(("ninja is not on PATH: torch would compile the 13 sources one at a time (~7 min)",
                      "Put the ninja of this python on PATH (bench/run_all.sh adds the python's bin folder)"))

    so = glob.glob(os.path.join(ROOT, "gpt_kernels", "_C*.so"))
    if so:  # e.g. carried from another machine: built against another torch, it does not load here
        rc, out = run([sys.executable, "-c", "import gpt_kernels"], timeout=60)
        show("gpt_kernels/_C.so", "present and imports" if rc == 0 else
             f"present but does not import ({first_line(out, 'error|undefined')[-120:]}): "
             "built against another torch; the build stage rebuilds it")

    env["NCU"] = find_tool("ncu", cuda_home) or ""
    env["CUOBJDUMP"] = find_tool("cuobjdump", cuda_home) or ""
    sanitizer = find_tool("compute-sanitizer", cuda_home)
    for name, path in (("ncu", env["NCU"]), ("cuobjdump", env["CUOBJDUMP"]), ("compute-sanitizer", sanitizer)):
        if path:
            rc, out = run([path, "--version"], timeout=30)
            show(name, f"{first_line(out, 'version|release') if rc == 0 else 'present'} ({path})")
        else:
            show(name, "not found")

    if stops or not env["GPU_ARCH"]:
        env["SANITIZER_NOTE"] = "not checked (CPU self-check)" if args.device == "cpu" else "not checked (stopped before)"
        finish()

    # The probe: does nvcc's output run on this GPU, and do memcheck and racecheck work here?
    tmp = tempfile.mkdtemp(prefix="gpt_probe_")
    exe = os.path.join(tmp, "probe")
    sm = env["GPU_ARCH"].replace(".", "")
    rc, out = run([nvcc, f"-arch=sm_{sm}", "-o", exe, PROBE], timeout=120)
    if rc != 0:
        stops.append((f"nvcc cannot build a CUDA program for sm_{sm}: {first_line(out, 'error')}",
                      "Check the toolkit (CUDA_HOME) against the GPU"))
        finish()
    rc, out = run([exe, "ok"], timeout=60)
    show("probe (plain)", first_line(out))
    if rc != 0:
        stops.append((f"a CUDA program built by this nvcc does not run on this GPU: {first_line(out)}",
                      "The driver may be older than the toolkit (nvidia-smi above): use a matching toolkit"))
        finish()
    if not sanitizer:
        env["SANITIZER_NOTE"] = "not available: compute-sanitizer not found"
        finish()
    base = [sanitizer, "--error-exitcode", "99"]
    opts = ["--report-api-errors", "no"]  # torch's own expected API errors are not our kernels' faults
    rc, out = run(base + opts + ["--tool", "memcheck", exe, "ok"], timeout=120)
    if rc != 0 and re.search(r"unrecognized|unknown option|invalid option", out, re.I):
        opts = []
        rc, out = run(base + ["--tool", "memcheck", exe, "ok"], timeout=120)
    if rc != 0 or "probe ok: kernel ran" not in out:
        why = first_line(out, r"not supported|error|fail")
        env["SANITIZER_NOTE"] = f"not available: compute-sanitizer on a correct program: {why}"
        show("memcheck (clean)", f"does not work here: {why}")
        finish()
    env["SANITIZER"], env["SANITIZER_OPTS"] = sanitizer, " ".join(opts)
    show("memcheck (clean)", "works, no error reported")
    notes = []
    rc, out = run(base + opts + ["--tool", "memcheck", exe, "oob"], timeout=120)
    caught = rc == 99 and re.search(r"invalid __global__ write|out of bounds", out, re.I)
    show("memcheck (bug)", "caught the planted out-of-bounds write" if caught else
         f"did NOT catch the planted out-of-bounds write (exit {rc}): its verdicts are weaker")
    if not caught:
        notes.append("memcheck missed the probe's planted bug")
    rc, out = run(base + opts + ["--tool", "racecheck", exe, "race"], timeout=120)
    caught = rc == 99 and re.search(r"hazard|race", out, re.I)
    env["RACECHECK"] = "1" if caught or rc == 0 else "0"
    show("racecheck (bug)", "caught the planted shared-memory race" if caught else
         f"did NOT catch the planted race (exit {rc}: {first_line(out, 'error|hazard')})")
    if not caught:
        notes.append("racecheck missed the probe's planted race")
    env["SANITIZER_NOTE"] = "; ".join(notes) if notes else "memcheck and racecheck work (probe bugs caught)"
    shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
