"""The CUDA emulator's Python side: builds csrc/cuda/*.cu with g++ against cuda_emu.h (cached by
content), loads each op's library with ctypes, places tensors in guarded buffers and runs the
kernels under several thread schedules.

    lib = cuda_emu.load("cross_entropy")            # builds (or reuses) the emulated library
    out = cuda_emu.race_checked(lambda: cuda_emu.ce_forward(lib, logits, targets, ...))

Build: each csrc/cuda/<op>.cu is copied with its launches `k<<<g, b, smem, s>>>(args)` rewritten
into `::cuda_emu::Launch("k", __FILE__, __LINE__, __PRETTY_FUNCTION__, g, b, smem, s)(k, args)` and its
`extern __shared__ T name[];` into a pointer to the launch's dynamic shared memory (the only
two CUDA syntax extensions g++ cannot parse; everything else compiles as is, with
tests/cuda_emu/include ahead on the include path), then compiled with the runtime
(cuda_emu.cpp) and a shim (shims/<op>.cpp: C entry points that fill the launch parameters as
the torch launcher does) into lib<op>.so. Objects and libraries are cached under
$GPT_KERNELS_EMU_CACHE (default ~/.cache/gpt_kernels_emu) by a hash of the sources, headers,
compiler and flags, so editing a .cu and rerunning pytest rebuilds what changed.
Flags are plain x86-64 (no -march=native, -ffp-contract=off): results do not depend on the CPU.
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
def _cache_dir():
    """$GPT_KERNELS_EMU_CACHE, else ~/.cache/gpt_kernels_emu, else a folder in the temp dir."""
    if os.environ.get("GPT_KERNELS_EMU_CACHE"):
        return os.environ["GPT_KERNELS_EMU_CACHE"]
    for d in (os.path.join(os.path.expanduser("~"), ".cache", "gpt_kernels_emu"),
              os.path.join(tempfile.gettempdir(), f"gpt_kernels_emu-{os.getuid()}")):
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
    raise OSError("cuda_emu: no writable cache folder; set GPT_KERNELS_EMU_CACHE")


CACHE = _cache_dir()
CXX = os.environ.get("CXX", "g++")
OBJCOPY = os.environ.get("OBJCOPY", "objcopy")
FLAGS = ["-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-ffp-contract=off",
         "-U_FORTIFY_SOURCE", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-function", "-Wno-unused-variable"]
# nvcc includes cuda_runtime.h in every .cu file: so does the emulated build
CU_FLAGS = ["-x", "c++", "-D__CUDACC__", "-D__CUDA_ARCH__=800", "-include", os.path.join(HERE, "include", "cuda_runtime.h")]

# op -> its kernel file: one stem per op, csrc/cuda/<op>.cu (and its shim, shims/<op>.cpp)
OPS = {op: f"{op}.cu" for op in ("cross_entropy", "dropout_add", "bias_gelu", "causal_attention")}


def unavailable():
    """Why the emulator cannot run here (None if it can): it needs g++, objcopy and x86-64 Linux (its
    fibers switch stacks with a few lines of x86-64 assembly)."""
    import platform
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the CUDA emulator runs on x86-64 Linux only (this is {platform.system()} {platform.machine()})"
    for tool in (CXX, OBJCOPY):
        if shutil.which(tool) is None:
            return f"the CUDA emulator needs {tool} (a C++ compiler and binutils) on PATH"
    return None


class EmulatorError(RuntimeError):
    """A kernel failed under the emulator (memory check, barrier check, launch error)."""


class RaceError(AssertionError):
    """Two thread schedules gave different results: a missing barrier or another race."""


# ---------------------------------------------------------------------------------------------
# Build

def rewrite_cuda(src):
    """The .cu text with its launches and extern __shared__ declarations in C++ (line count kept)."""
    out, pos = [], 0
    while True:
        i = src.find("<<<", pos)
        if i < 0:
            out.append(src[pos:])
            break
        # the kernel expression before <<<: an identifier, possibly with template arguments
        j = i
        while j > 0 and src[j - 1].isspace():
            j -= 1
        if src[j - 1] == ">":
            depth, j = 0, j - 1
            while True:
                if src[j] == ">":
                    depth += 1
                elif src[j] == "<":
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
        while j > 0 and (src[j - 1].isalnum() or src[j - 1] in "_:"):
            j -= 1
        name = src[j:i]
        k = src.find(">>>", i)
        config = src[i + 3:k]
        m = re.compile(r"\s*\(\s*(\)?)").match(src, k + 3)
        if not m:
            raise ValueError(f"cuda_emu: cannot parse the launch at offset {i}: {src[j:k + 20]!r}")
        literal = " ".join(name.split())
        out.append(src[pos:j])
        tail = ")" if m.group(1) else ", "
        out.append(f'::cuda_emu::Launch("{literal}", __FILE__, __LINE__, __PRETTY_FUNCTION__, {config})({name}{tail}'
                   + "\n" * src[k + 3:m.end()].count("\n"))
        pos = m.end()
    text = "".join(out)

    def shared(m):
        typ, name = " ".join(m.group(1).split()), m.group(2)
        return (f"{typ}* const {name} = static_cast<{typ}*>(::cuda_emu::detail::dynamic_shared_memory());"
                + "\n" * m.group(0).count("\n"))
    return re.sub(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([A-Za-z_][\w:\s]*?)\s+([A-Za-z_]\w*)"
                  r"\s*\[\s*\]\s*;", shared, text)


def _hash(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _read_tree(paths):
    blobs = []
    for p in sorted(paths):
        with open(p, "rb") as f:
            blobs.append(p.encode() + b"\0" + f.read())
    return b"".join(blobs)


_compiler_id = None


def _compiler():
    global _compiler_id
    if _compiler_id is None:
        _compiler_id = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    return _compiler_id


def _compile(src_path, obj, extra, includes, shared_bss=False):
    """Compiles src_path to obj. shared_bss: a kernel file, whose .bss (its static __shared__
    variables) becomes the section gk_emu_shared that the runtime poisons at every block."""
    if os.path.exists(obj):
        return
    os.makedirs(os.path.dirname(obj), exist_ok=True)
    tmp = f"{obj}.{os.getpid()}.tmp"
    cmd = [CXX, *FLAGS, *extra, *includes, "-c", src_path, "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise EmulatorError(f"cuda_emu: compiling {src_path} failed:\n{' '.join(cmd)}\n{r.stderr[-6000:]}")
    if shared_bss:
        r = subprocess.run([OBJCOPY, "--rename-section", ".bss=gk_emu_shared", tmp], capture_output=True, text=True)
        if r.returncode != 0:
            raise EmulatorError(f"cuda_emu: {OBJCOPY} on {tmp} failed:\n{r.stderr[-2000:]}")
    os.replace(tmp, obj)


def build(op, csrc=None, jobs=None):
    """Path of the emulated library of `op`, built from csrc/ (default: this working tree's)."""
    return build_many([op], csrc, jobs)[op]


def build_many(ops, csrc=None, jobs=None):
    """{op: library path} for the ops of OPS (and "selftest": tests/cuda_emu/selftest.cu)."""
    csrc = os.path.abspath(csrc or os.path.join(ROOT, "csrc"))
    cuda_dir = os.path.join(csrc, "cuda")
    jobs = jobs or int(os.environ.get("GPT_KERNELS_EMU_JOBS", "2"))
    emu_files = [os.path.join(HERE, f) for f in ("cuda_emu.h", "cuda_emu.cpp")] + \
        [os.path.join(HERE, "include", f) for f in os.listdir(os.path.join(HERE, "include"))]
    emu_blob = _read_tree(emu_files)
    # headers the kernels may include: csrc/cuda/*.h, *.cuh and csrc/*.h (content only, so a
    # copy of csrc/ with one planted .cu shares every other object)
    headers = [os.path.join(cuda_dir, f) for f in os.listdir(cuda_dir) if f.endswith((".h", ".cuh"))] + \
        [os.path.join(csrc, f) for f in os.listdir(csrc) if f.endswith(".h")]
    hdr_blob = b"".join(open(p, "rb").read() for p in sorted(headers))
    base = _hash(_compiler(), FLAGS, CU_FLAGS, emu_blob, "bss=gk_emu_shared")
    includes = ["-I", os.path.join(HERE, "include"), "-iquote", cuda_dir, "-I", cuda_dir]
    objdir = os.path.join(CACHE, "obj")
    runtime_obj = os.path.join(objdir, f"cuda_emu-{base}.o")
    tasks = [(os.path.join(HERE, "cuda_emu.cpp"), runtime_obj, [], ["-I", HERE])]
    # the kernel files of another tree (a copy with a planted bug) are built next to it, so that
    # temporary copies do not pile up in the cache (the runtime and shims are shared)
    own = csrc == os.path.abspath(os.path.join(ROOT, "csrc"))
    kernel_dir = CACHE if own else os.path.join(os.path.dirname(csrc), "emu_build")
    rewritten_dir = os.path.join(kernel_dir, "src")
    os.makedirs(rewritten_dir, exist_ok=True)
    libs = {}
    for op in ops:
        cu = os.path.join(HERE, "selftest.cu") if op == "selftest" else os.path.join(cuda_dir, OPS[op])
        with open(cu) as f:
            text = f'#line 1 "{cu}"\n' + rewrite_cuda(f.read())
        key = _hash(base, text, hdr_blob)
        src = os.path.join(rewritten_dir, f"{op}-{key}.cu.cpp")
        if not os.path.exists(src):
            with open(f"{src}.{os.getpid()}.tmp", "w") as f:
                f.write(text)
            os.replace(f"{src}.{os.getpid()}.tmp", src)
        objs = [runtime_obj, os.path.join(kernel_dir, "obj", f"{op}-{key}.o")]
        tasks.append((src, objs[-1], CU_FLAGS, includes, True))
        if op != "selftest":
            shim = os.path.join(HERE, "shims", f"{op}.cpp")
            with open(shim, "rb") as f:
                shim_key = _hash(base, f.read(), hdr_blob)
            objs.append(os.path.join(objdir, f"shim-{op}-{shim_key}.o"))
            tasks.append((shim, objs[-1], CU_FLAGS, includes))
        libs[op] = (os.path.join(kernel_dir, "lib", f"lib{op}-{_hash(*objs)}.so"), objs)
    # the biggest files first: they bound the wall time
    tasks = [t for t in tasks if not os.path.exists(t[1])]
    tasks.sort(key=lambda t: -os.path.getsize(t[0]))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(_compile, *t) for t in tasks]:
            f.result()
    out = {}
    for op, (so, objs) in libs.items():
        if not os.path.exists(so):
            os.makedirs(os.path.dirname(so), exist_ok=True)
            tmp = f"{so}.{os.getpid()}.tmp"
            r = subprocess.run([CXX, "-shared", "-o", tmp, *objs], capture_output=True, text=True)
            if r.returncode != 0:
                raise EmulatorError(f"cuda_emu: linking {so} failed:\n{r.stderr[-4000:]}")
            os.replace(tmp, so)
        out[op] = so
    return out


class Library:
    """One op's emulated library (its own runtime: schedules and errors are per library)."""

    def __init__(self, path):
        self.path = path
        self.dll = ctypes.CDLL(path)
        d = self.dll
        d.emu_alloc.restype = ctypes.c_void_p
        d.emu_alloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int]
        d.emu_free.argtypes = [ctypes.c_void_p]
        d.emu_message.restype = ctypes.c_char_p
        d.emu_set_schedule.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint64, ctypes.c_int]
        d.emu_switches.restype = ctypes.c_uint64
        self.schedule = (0, 0, 0, 0)

    def set_schedule(self, thread_order, block_order, seed, placement):
        self.schedule = (thread_order, block_order, seed, placement)
        self.dll.emu_set_schedule(thread_order, block_order, seed, placement)

    def call(self, fn, *args):
        """Runs an entry point of the shim; raises EmulatorError with the emulator's report."""
        self.dll.emu_reset()
        rc = getattr(self.dll, fn)(*args)
        if rc != 0:
            msg = self.dll.emu_message().decode(errors="replace")
            raise EmulatorError(f"{fn} returned CUDA error {rc}{': ' + msg if msg else ''}")
        return rc


_libs = {}


def load(op, csrc=None):
    """The emulated library of op (built on first use; csrc: another source tree, e.g. a copy
    with a planted bug)."""
    key = (op, os.path.abspath(csrc) if csrc else None)
    if key not in _libs:
        _libs[key] = Library(build(op, csrc))
    return _libs[key]


def load_all(ops=None):
    """{op: Library} for every op of OPS (default), built together (in parallel)."""
    ops = list(ops or OPS)
    paths = build_many([op for op in ops if (op, None) not in _libs])
    for op, p in paths.items():
        _libs[(op, None)] = Library(p)
    return {op: _libs[(op, None)] for op in ops}


# ---------------------------------------------------------------------------------------------
# Buffers

class Buffers:
    """Guarded emulator buffers of one op call; freed on exit."""

    def __init__(self, lib):
        self.lib, self.ptrs = lib, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.ptrs:
            self.lib.dll.emu_free(ctypes.c_void_p(p))
        self.ptrs.clear()

    def alloc(self, nbytes, name, elem=1, misalign=0, fill=0xFF):
        """nbytes (at least 1) filled with `fill` (0xFF: NaN in every float type, -1 as int)."""
        p = self.lib.dll.emu_alloc(max(int(nbytes), 1), misalign, name.encode(), elem)
        if not p:
            raise MemoryError("emu_alloc failed")
        self.ptrs.append(p)
        ctypes.memset(p, fill, max(int(nbytes), 1))
        return p

    def put(self, t, name):
        """A copy of tensor t (any strides >= 0): the span from its first to its last element,
        at the same address modulo 16 as t. Returns the pointer of t's first element."""
        t = t.detach()
        elem = t.element_size()
        span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) if t.numel() else 0
        p = self.alloc(span * elem, name, elem, misalign=t.data_ptr() % 16)
        if span:
            ctypes.memmove(p, t.data_ptr(), span * elem)
        return p

    def empty(self, shape, dtype, name, fill=0xFF):
        n = 1
        for s in shape:
            n *= s
        elem = torch.empty(0, dtype=dtype).element_size()
        return self.alloc(n * elem, name, elem, fill=fill)

    @staticmethod
    def get(p, shape, dtype):
        t = torch.empty(shape, dtype=dtype)
        if t.numel():
            ctypes.memmove(t.data_ptr(), p, t.numel() * t.element_size())
        return t


# ---------------------------------------------------------------------------------------------
# Schedules and the race check

# (thread order, block order, seed, placement): threads and blocks in order, round robin (the
# threads of a block advance together from sync point to sync point), buffers flush against
# the guard page after them; threads reversed and run greedily (the last warp runs as far ahead
# as it can before the others start), blocks reversed, buffers flush against the guard page
# before them; threads and blocks shuffled, round robin; threads in order, greedy (the first
# warp runs ahead), blocks shuffled. Threads run until they reach a sync point, so the
# schedules differ in which thread's code between two sync points runs first, and how far
# one warp gets ahead of another.
SCHEDULES = [(0, 0, 0, 0), (4, 1, 0, 1), (2, 2, 1, 0), (3, 2, 2, 1)]


def _bits(t):
    """t's bits as integers, flat (NaN == NaN when the bits agree)."""
    t = t.reshape(-1).contiguous()
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def race_checked(run, lib, schedules=SCHEDULES, order_dependent=()):
    """run() under each schedule; every output (a dict of tensors) must agree bit for bit with
    the first schedule's. Outputs named in order_dependent are sums of float atomics from several
    blocks (their order follows the block order): those must agree to one ulp of their dtype
    (plus 1e-5 of their largest magnitude) where the block order differs."""
    results = []
    try:
        for s in schedules:
            lib.set_schedule(*s)
            results.append((s, run()))
    finally:
        lib.set_schedule(*schedules[0])
    s0, r0 = results[0]
    for s, r in results[1:]:
        for name, a in r0.items():
            b = r[name]
            if a is None:
                continue
            if name in order_dependent and s[1] != s0[1]:
                # the fp32 sums may differ in their last bits, and so flip the rounding of the
                # output to its dtype: one ulp of the output
                ad, bd = a.double(), b.double()
                scale = ad.abs().max().item() if a.numel() else 0.0
                allowed = torch.finfo(a.dtype).eps * ad.abs() + 1e-5 * scale
                if ((ad - bd).abs() > allowed).any():
                    raise RaceError(f"output '{name}' differs between schedules {s0} and {s} by more than the "
                                    f"rounding of its float atomics (max {(ad - bd).abs().max().item():.3g})")
                continue
            ab, bb = _bits(a), _bits(b)
            if not torch.equal(ab, bb):
                idx = (ab != bb).nonzero()[:5].reshape(-1).tolist()
                raise RaceError(f"output '{name}' differs between thread schedules {s0} and {s} (a race: a missing "
                                f"__syncthreads or __syncwarp?) at flat indices {idx}: "
                                f"{a.reshape(-1)[idx].tolist()} vs {b.reshape(-1)[idx].tolist()}")
    return r0


# ---------------------------------------------------------------------------------------------
# The ops, as their CUDA launchers call the kernels

CE_DTYPE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
DROP_DTYPE = CE_DTYPE
GELU_DTYPE = CE_DTYPE
CE_REDUCTION = {"none": 0, "mean": 1, "sum": 2}


def acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def ce_forward(lib, logits, targets, ignore_index=-100, reduction="mean", compute_grad=True, inplace=False):
    """ce_forward on (N, V) logits (contiguous, as the launcher passes them). Returns row_loss,
    out, grad (None without), bad (targets outside [0, V) counted by the kernels)."""
    N, V = logits.shape
    dt = logits.dtype
    with Buffers(lib) as b:
        x = b.put(logits, "logits")
        g = x if inplace else (b.empty((N, V), dt, "grad") if compute_grad else None)
        t = b.put(targets, "targets")
        row_loss = b.empty((N,), acc_dtype(dt), "row_loss")
        out = b.empty((1,), acc_dtype(dt), "out")  # the reduced loss: fp32 (fp64 for fp64)
        ncounts = lib.dll.emu_ce_counts_size()
        counts = b.empty((ncounts,), torch.int32, "counts")
        lib.call("emu_ce_forward", ctypes.c_void_p(x), ctypes.c_void_p(g), ctypes.c_void_p(t), ctypes.c_void_p(row_loss),
                 ctypes.c_void_p(out), ctypes.c_void_p(counts), ctypes.c_int64(N), ctypes.c_int64(V),
                 ctypes.c_int64(ignore_index), ctypes.c_int(CE_REDUCTION[reduction]), ctypes.c_int(CE_DTYPE[dt]))
        cnt = b.get(counts, (ncounts,), torch.int32)
        return {"row_loss": b.get(row_loss, (N,), acc_dtype(dt)),
                "out": b.get(out, (), acc_dtype(dt)) if reduction != "none" else None,
                "grad": b.get(g, (N, V), dt) if g is not None else None,
                "valid": cnt[-2:-1].clone(), "bad": cnt[-1:].clone()}


def ce_regrad(lib, grad, logits, grad_loss, targets, ignore_index=-100, reduction="mean"):
    """ce_regrad (the 16-bit backward): rows of grad whose upstream factor is not exactly 1
    recomputed from the logits. Returns the new grad."""
    N, V = logits.shape
    factors = grad_loss.reshape(-1).to(acc_dtype(logits.dtype)).contiguous()
    with Buffers(lib) as b:
        x = b.put(logits, "logits")
        g = b.put(grad, "grad")
        t = b.put(targets, "targets")
        f = b.put(factors, "factors")
        ncounts = lib.dll.emu_ce_counts_size()
        counts = b.empty((ncounts,), torch.int32, "counts")
        lib.call("emu_ce_regrad", ctypes.c_void_p(x), ctypes.c_void_p(g), ctypes.c_void_p(t), ctypes.c_void_p(counts),
                 ctypes.c_int64(N), ctypes.c_int64(V), ctypes.c_int64(ignore_index),
                 ctypes.c_int(CE_REDUCTION[reduction]), ctypes.c_int(CE_DTYPE[logits.dtype]), ctypes.c_void_p(f),
                 ctypes.c_int(reduction == "none"))
        return {"grad": b.get(g, (N, V), logits.dtype)}


def ce_scale_grad(lib, grad, grad_loss, targets, ignore_index=-100, reduction="mean"):
    """ce_scale_grad on a contiguous (N, V) grad: returns the scaled grad."""
    N, V = grad.shape
    scales = grad_loss.reshape(-1).to(acc_dtype(grad.dtype)).contiguous()
    with Buffers(lib) as b:
        g = b.put(grad, "grad")
        s = b.put(scales, "scales")
        t = b.put(targets, "targets")
        lib.call("emu_ce_scale_grad", ctypes.c_void_p(g), ctypes.c_void_p(s), ctypes.c_int(reduction == "none"),
                 ctypes.c_void_p(t), ctypes.c_int64(N), ctypes.c_int64(V), ctypes.c_int64(ignore_index),
                 ctypes.c_int(CE_DTYPE[grad.dtype]))
        return {"grad": b.get(g, (N, V), grad.dtype)}


def dropout_add(lib, src, residual, p, seed, offset, dst_dtype=None, backward=False):
    """dropout_add forward (dst = residual + src * Z) or backward (dst = src * Z) on flat data;
    src and residual keep their addresses modulo 16 (odd storage offsets: the unaligned path)."""
    n = src.numel()
    dst_dtype = dst_dtype or (residual.dtype if residual is not None else src.dtype)
    with Buffers(lib) as b:
        s = b.put(src, "src")
        r = b.put(residual, "residual") if residual is not None else None
        d = b.empty((n,), dst_dtype, "dst")
        lib.call("emu_dropout_add", ctypes.c_int(backward), ctypes.c_void_p(s), ctypes.c_void_p(r), ctypes.c_void_p(d),
                 ctypes.c_int64(n), ctypes.c_int(DROP_DTYPE[src.dtype]), ctypes.c_int(DROP_DTYPE[dst_dtype]),
                 ctypes.c_double(p), ctypes.c_uint64(seed), ctypes.c_uint64(offset))
        return {"out": b.get(d, src.shape, dst_dtype)}


def bias_gelu(lib, x, bias, grad_out=None, approximate="none"):
    """bias_gelu forward (grad_out None: returns out) or backward (returns grad_x, grad_bias);
    approximate "none" (the exact GELU) or "tanh"."""
    n = x.shape[-1]
    rows = x.numel() // n
    dt = x.dtype
    backward = grad_out is not None
    rb = lib.dll.emu_bias_gelu_row_block()
    with Buffers(lib) as b:
        xp = b.put(x, "x")
        bp = b.put(bias, "bias")
        gp = b.put(grad_out, "grad_out") if backward else None
        out = b.empty(x.shape, dt, "grad_x" if backward else "out")
        gb = b.empty((n,), dt, "grad_bias") if backward else None
        part = b.empty(((rows + rb - 1) // rb, n), acc_dtype(dt), "partial") if backward else None
        lib.call("emu_bias_gelu", ctypes.c_int(backward), ctypes.c_void_p(xp), ctypes.c_void_p(bp), ctypes.c_void_p(gp),
                 ctypes.c_void_p(out), ctypes.c_void_p(gb), ctypes.c_void_p(part), ctypes.c_int64(rows),
                 ctypes.c_int64(n), ctypes.c_int(GELU_DTYPE[dt]), ctypes.c_int({"none": 0, "tanh": 1}[approximate]))
        if backward:
            return {"grad_x": b.get(out, x.shape, dt), "grad_bias": b.get(gb, (n,), dt)}
        return {"out": b.get(out, x.shape, dt)}


def _strides(t):
    return (ctypes.c_int64 * 3)(*t.stride()[:3])


def attention_forward(lib, q, k, v, p, scale, seed, offset):
    """The forward kernel on (B, H, T, D) q, k, v (unit stride along D, any row strides, as the
    launcher passes them). Returns out (B, H, T, D) and lse (B, H, T) fp32."""
    B, H, T, D = q.shape
    with Buffers(lib) as b:
        qp, kp, vp = b.put(q, "q"), b.put(k, "k"), b.put(v, "v")
        out = b.empty((B, H, T, D), q.dtype, "out")
        lse = b.empty((B, H, T), torch.float32, "lse")
        lib.call("emu_attention_forward", ctypes.c_void_p(qp), ctypes.c_void_p(kp), ctypes.c_void_p(vp), _strides(q),
                 _strides(k), _strides(v), ctypes.c_void_p(out), ctypes.c_void_p(lse), B, H, T, D,
                 ctypes.c_double(p), ctypes.c_double(scale), ctypes.c_uint64(seed), ctypes.c_uint64(offset),
                 ctypes.c_int(q.dtype == torch.bfloat16))
        return {"out": b.get(out, (B, H, T, D), q.dtype), "lse": b.get(lse, (B, H, T), torch.float32)}


def attention_backward(lib, dout, q, k, v, out, lse, p, scale, seed, offset):
    """The backward kernels (delta, main, dq): returns dq, dk, dv (B, H, T, D)."""
    B, H, T, D = q.shape
    with Buffers(lib) as b:
        dp = b.put(dout, "grad_out")
        qp, kp, vp = b.put(q, "q"), b.put(k, "k"), b.put(v, "v")
        op = b.put(out.contiguous(), "out")
        lp = b.put(lse.contiguous(), "lse")
        delta = b.empty((B, H, T), torch.float32, "delta")
        dq_accum = b.empty((B, H, T, D), torch.float32, "dq_accum", fill=0)
        dq, dk, dv = (b.empty((B, H, T, D), q.dtype, n) for n in ("dq", "dk", "dv"))
        lib.call("emu_attention_backward", ctypes.c_void_p(dp), _strides(dout), ctypes.c_void_p(qp), ctypes.c_void_p(kp),
                 ctypes.c_void_p(vp), _strides(q), _strides(k), _strides(v), ctypes.c_void_p(op), ctypes.c_void_p(lp),
                 ctypes.c_void_p(delta), ctypes.c_void_p(dq_accum), ctypes.c_void_p(dq), ctypes.c_void_p(dk),
                 ctypes.c_void_p(dv), B, H, T, D, ctypes.c_double(p), ctypes.c_double(scale), ctypes.c_uint64(seed),
                 ctypes.c_uint64(offset), ctypes.c_int(q.dtype == torch.bfloat16))
        shape = (B, H, T, D)
        return {"dq": b.get(dq, shape, q.dtype), "dk": b.get(dk, shape, q.dtype), "dv": b.get(dv, shape, q.dtype),
                "delta": b.get(delta, (B, H, T), torch.float32)}


def planted_copy(tmpdir, file, old, new, count=1):
    """A copy of csrc/ under tmpdir with `old` replaced by `new` in csrc/cuda/<file> (exactly
    `count` occurrences must exist); returns the copy's csrc path."""
    dst = os.path.join(str(tmpdir), "csrc")
    shutil.copytree(os.path.join(ROOT, "csrc"), dst)
    path = os.path.join(dst, "cuda", file)
    with open(path) as f:
        text = f.read()
    found = text.count(old)
    if found != count:
        raise AssertionError(f"planted_copy: {old!r} occurs {found} times in {file}, expected {count}")
    with open(path, "w") as f:
        f.write(text.replace(old, new))
    return dst
