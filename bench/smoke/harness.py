"""Shared plumbing of the smoke scripts (bench/smoke/<op>.py): one op each, run on a GPU first.

Each smoke script runs forward and backward of its op at a few small, awkward shapes and dtypes
and compares every output with a float64 reference (and, on CUDA, with the CPU kernel where it
takes the dtype). What this module adds around each case:

  poison   torch.use_deterministic_algorithms(True, warn_only=True) makes every torch.empty
           (also at::empty inside our launchers) fill floats with NaN and integers with their
           maximum, so an output element a kernel never writes shows up as NaN, and NaN never
           passes a comparison. Checked at start: an empty tensor must come back NaN.
  errors   on CUDA, after each case torch.cuda.synchronize() (raises on an asynchronous fault)
           and cudaGetLastError() from the libcudart this process loaded (a launch error a
           launcher forgot to check). Run with CUDA_LAUNCH_BLOCKING=1 (bench/run_all.sh does)
           so a fault is raised by the call that caused it.
  report   one line per case, PASS or FAIL, with each output's largest error; the exit status
           is 0 when every case passed, 1 when any failed, 2 when the op cannot run at all (no
           GPU, extension not built). After a fault that leaves the CUDA context unusable the
           remaining cases are not run, and the line says so.

Every check runs on CPU copies, so that on the GPU only our kernels and torch's copies and fills
run (compute-sanitizer then reports on little else). Comparisons (compare, compare_norm) measure
against the reference as the tests do: elementwise |ours - ref| <= atol + rtol * |ref| (reported
as the worst ratio to that bound: <= 1 passes), or a norm-relative error for attention.
--device cpu runs the same cases on the CPU kernels (the dtypes the CPU takes), so the scripts'
own logic is tested without a GPU (tests/test_gpu_run.py).
"""
import argparse
import ctypes
import math
import os
import sys
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # gpt_kernels, built in place


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (default), or cpu to check the script itself on the CPU kernels")
    parser.add_argument("--tiny", action="store_true",
                        help="the smallest cases only (for compute-sanitizer, which is ~100x slower)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the random inputs")
    return parser.parse_args()


def dtype_name(dtype):
    return {torch.float64: "fp64", torch.float32: "fp32", torch.bfloat16: "bf16",
            torch.float16: "fp16"}.get(dtype, str(dtype))


class CudaContextBroken(RuntimeError):
    """A fault after which no further CUDA work can run in this process."""


def _loaded_cudart():
    """The libcudart this process has loaded (torch's and our extension's), or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libcudart.so" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)  # the same file: dlopen hands back the loaded instance
            lib.cudaGetLastError.restype = ctypes.c_int
            lib.cudaGetErrorString.restype = ctypes.c_char_p
            return lib
        except OSError:
            continue
    return None


def _is_sticky(error):
    """Whether a CUDA error message is one after which the context is unusable."""
    text = str(error).lower()
    return any(s in text for s in ("illegal memory access", "illegal address", "misaligned address",
                                   "unspecified launch failure", "device-side assert",
                                   "illegal instruction", "an illegal", "hardware stack error",
                                   "cuda error: unknown error", "launch timed out"))


def compare(name, ours, ref, rtol, atol):
    """(ok, text): |ours - ref| <= atol + rtol * |ref| everywhere, NaN never passing unless the
    reference has NaN at the same place. text gives the largest |ours - ref| and its worst
    ratio to the bound (<= 1 passes)."""
    ours = ours.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    if ours.shape != ref.shape:
        return False, f"{name} shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    both_nan = ours.isnan() & ref.isnan()
    same_inf = ours.isinf() & ref.isinf() & (ours == ref)
    special = both_nan | same_inf
    bad_nan = (~ours.isfinite() & ~special).sum().item()
    diff = (ours - ref).abs().masked_fill(special, 0.0)
    bound = atol + rtol * ref.abs().masked_fill(~ref.isfinite(), 0.0)
    ratio = torch.where(diff == 0, 0.0, diff / bound).masked_fill(special, 0.0)  # exact: 0 even at tol 0
    worst = ratio.max().item() if ratio.numel() else 0.0
    max_abs = diff.max().item() if diff.numel() else 0.0
    if bad_nan:
        return False, f"{name} {bad_nan} non-finite of {ours.numel()} (unwritten, poisoned NaN?)"
    ok = worst <= 1.0
    return ok, f"{name} {max_abs:.1e} ({worst:.2f} of tol)"


def compare_norm(name, ours, ref, tol):
    """(ok, text): ||ours - ref|| / (||ref|| + sqrt(numel)) < tol, NaN never passing (the
    attention tests' measure: relative for O(1) data, absolute where ref is ~0)."""
    ours = ours.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    if ours.shape != ref.shape:
        return False, f"{name} shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    bad = (~ours.isfinite()).sum().item()
    if bad:
        return False, f"{name} {bad} non-finite of {ours.numel()} (unwritten, poisoned NaN?)"
    err = ((ours - ref).norm() / (ref.norm() + math.sqrt(ref.numel()))).item()
    max_abs = (ours - ref).abs().max().item() if ref.numel() else 0.0
    return err < tol, f"{name} {err:.1e} (max {max_abs:.1e}; {err / tol:.2f} of tol)"


class Smoke:
    """Runs an op's cases and reports them. Use:

        smoke = Smoke("dropout_add", args)
        smoke.run("fp32 (65,) p=0.1", lambda: [compare(...), compare(...)])
        sys.exit(smoke.finish())
    """

    def __init__(self, op, args):
        self.op, self.args, self.device = op, args, torch.device(args.device)
        self.passed = self.failed = 0
        self.started = time.time()
        self.broken = None
        print(f"smoke {op} on {args.device}{' (tiny)' if args.tiny else ''}: torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, CUDA_LAUNCH_BLOCKING={os.environ.get('CUDA_LAUNCH_BLOCKING', 'unset')}",
              flush=True)
        try:
            import gpt_kernels
        except ImportError as e:
            self.setup_failure(f"gpt_kernels does not import ({e}): build it first "
                               "(python setup.py build_ext --inplace)")
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                self.setup_failure("no CUDA GPU visible to torch")
            if not gpt_kernels.has_cuda_kernels():
                self.setup_failure("gpt_kernels was built without its CUDA kernels (GPT_KERNELS_CUDA=1 to insist)")
            print(f"  GPU: {torch.cuda.get_device_name()} (capability "
                  f"{'.'.join(map(str, torch.cuda.get_device_capability()))})", flush=True)
        self.cudart = _loaded_cudart() if self.device.type == "cuda" else None
        if self.device.type == "cuda" and self.cudart is None:
            print("  note: libcudart not found among the loaded libraries: cudaGetLastError is not "
                  "checked, torch.cuda.synchronize is", flush=True)
        torch.use_deterministic_algorithms(True, warn_only=True)
        probe = torch.empty(4, device=self.device).cpu()
        if not probe.isnan().all():
            print("  note: torch.empty is not NaN-filled under deterministic mode: unwritten "
                  "outputs are not detected by poisoning", flush=True)
        if self.cudart is not None:  # an error left by start-up is not a case's: read and clear it
            torch.cuda.synchronize()
            code = self.cudart.cudaGetLastError()
            if code != 0:
                print(f"  note: cudaGetLastError() = {code} after start-up, before any case (cleared)", flush=True)

    def setup_failure(self, why):
        print(f"FAIL  {self.op} setup: {why}", flush=True)
        sys.exit(2)

    def check_cuda(self):
        """Raise if the GPU holds an error: an asynchronous fault, or a launch error left unread."""
        if self.device.type != "cuda":
            return
        torch.cuda.synchronize()
        if self.cudart is not None:
            code = self.cudart.cudaGetLastError()
            if code != 0:
                raise RuntimeError(f"cudaGetLastError() = {code} "
                                   f"({self.cudart.cudaGetErrorString(code).decode()})")

    def run(self, label, case):
        """Run case() -> list of (ok, text) from compare/compare_norm; print one line."""
        if self.broken:
            self.failed += 1
            print(f"FAIL  {self.op} {label}: not run (the CUDA context broke at an earlier case)", flush=True)
            return
        t0 = time.time()
        try:
            results = case()
            self.check_cuda()
        except Exception as e:  # a failing case is reported, and the others still run
            self.failed += 1
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"FAIL  {self.op} {label}: {type(e).__name__}: {first[:300]}", flush=True)
            traceback.print_exc(limit=4, file=sys.stdout)
            if self.device.type == "cuda" and (_is_sticky(e) or not self._context_alive()):
                self.broken = label
                print(f"      the CUDA context is unusable after this fault: later cases are not run", flush=True)
            return
        ok = all(r[0] for r in results)
        self.passed += ok
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {self.op} {label}: {'; '.join(r[1] for r in results)} "
              f"[{time.time() - t0:.2f} s]", flush=True)

    def _context_alive(self):
        try:
            torch.cuda.synchronize()
            torch.zeros(1, device=self.device).add_(1).item()
            return True
        except Exception:
            return False

    def finish(self):
        total = self.passed + self.failed
        verdict = "PASSED" if self.failed == 0 and total > 0 else "FAILED"
        print(f"{verdict} {self.op} on {self.args.device}: {self.passed}/{total} cases passed "
              f"in {time.time() - self.started:.1f} s", flush=True)
        return 0 if verdict == "PASSED" else 1


def generator(seed):
    return torch.Generator().manual_seed(seed)


def misaligned(t):
    """A copy of t whose data starts one element past a 16-byte boundary (same values, same
    shape, contiguous): forces the kernels' unaligned paths."""
    flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    return view
