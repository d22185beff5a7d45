"""Shared measuring tools for the benchmarks in bench/: one runner, one way to find the kernels.

Every op benchmark (bench/<op>_bench.py, and loss_bench.py for cross_entropy) is just its
providers, shapes and traffic formula on top of this module:

    import common                                  # also puts the repository root on sys.path
    kernels = common.load_kernels()                # gpt_kernels, or None (saying so, once)
    bench = common.Bench("bias_gelu_bench", args, limits=("copy_gbs",), rounds=20, warmup=4)
    for mode in common.MODES:                      # "fwd" (under no_grad), "fwd+bwd"
        calls = {name: common.step(fn, (x, b), mode, grad=g) for name, fn in providers}
        bench.compare({"shape": ..., "mode": mode}, calls, nbytes=...)   # one row per provider
    bench.write(notes)                             # bench/results/<name>_<device>.json and .md

Bench.compare times the providers of one shape and mode in interleaved rounds (A, B, C, A, B,
C, ...; round_robin_ms) so that a change of load on a shared machine hits every provider alike,
takes medians, the ratios against the reference provider(s) of the same rounds, achieved GB/s
(from nbytes) and/or GFLOP/s (from flops) and their fraction of the device's limits, measured
once per process on the same device (a 256 MB copy; a large matmul), and the peak memory.

Every benchmark puts our kernels beside the PyTorch path in the same run and relates both to a
hardware limit measured in that run too, because machines of the same kind differ by up to 2x:
only same-run ratios mean anything. On CUDA, times come from CUDA events around each repeat,
with the L2 cache flushed before each repeat (so a kernel is not timed reading data the
previous repeat left in cache); on the CPU from perf_counter.
"""
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time

import torch

# The one bootstrap of bench/: `python bench/<x>.py` puts bench/ on sys.path (so `import common`
# works); this adds the repository root, for gpt_kernels (built in place), gpt_pretrain, support.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# GPT_BENCH_RESULTS: another folder (bench/run_all.sh's CPU self-check), so a trial run never
# replaces the committed tables
RESULTS_DIR = os.environ.get("GPT_BENCH_RESULTS") or os.path.join(ROOT, "bench", "results")
MODES = ("fwd", "fwd+bwd")

_kernels = ()  # not looked for yet


def load_kernels():
    """The gpt_kernels module, or None after printing one line saying why (once a process).

    The one check of the extension in bench/: providers that need it are left out when None."""
    global _kernels
    if _kernels == ():
        try:
            import gpt_kernels
            _kernels = gpt_kernels
        except ImportError as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            print(f"gpt_kernels is not built ({reason}): only the PyTorch providers run", flush=True)
            _kernels = None
    return _kernels


def pick_device(requested=None):
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device):
    """A human name for the device: the GPU's, or the CPU model with the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"model name\s*:\s*(.+)", f.read())
            model = match.group(1).strip() if match else model
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


def device_slug(device):
    """File-name part for results: 'cuda-nvidia-h100-80gb-hbm3' or 'cpu-2threads'."""
    device = torch.device(device)
    if device.type == "cuda":
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"cpu-{torch.get_num_threads()}threads"


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


_l2_flush_buffer = None


def flush_l2(device):
    """Overwrite a buffer larger than any L2 cache (H100: 50 MB) so the next kernel reads DRAM."""
    global _l2_flush_buffer
    if torch.device(device).type != "cuda":
        return
    if _l2_flush_buffer is None or _l2_flush_buffer.device != torch.device(device):
        _l2_flush_buffer = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    _l2_flush_buffer.zero_()


def time_once_ms(fn, device, setup=None):
    """Milliseconds of one fn() call; setup(), when given, runs first, outside the timed region
    (e.g. to make fresh inputs that fn consumes). CUDA: events around the call, after an L2
    flush; CPU: perf_counter."""
    if setup:
        setup()
    if torch.device(device).type == "cuda":
        flush_l2(device)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_ms(fn, device, warmup=3, reps=20, min_seconds=0.0, setup=None):
    """Median milliseconds of fn() alone over reps (more while under min_seconds of timing), after
    warmup untimed calls. For comparing providers use round_robin_ms, which interleaves them."""
    device = torch.device(device)
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    sync(device)
    times = []
    started = time.perf_counter()
    while len(times) < reps or time.perf_counter() - started < min_seconds:
        times.append(time_once_ms(fn, device, setup))
        if len(times) >= 10 * reps:
            break
    return statistics.median(times)


def round_robin_ms(calls, device, *, rounds=None, budget_s=None, warmup=1, repeat=1, skip_errors=False):
    """Median ms of each call, timed in interleaved rounds (A, B, C, A, B, C, ...) so that a change
    of load on a shared machine hits every call alike: only same-run ratios count.

    calls: {name: fn or (fn, setup)}. Each call first runs warmup (>= 1) untimed times, one after
    the other (compiles, warms caches); the last of them also gives the time estimate that fits
    the rounds to budget_s seconds of timing per call when rounds is not given (3 to 1000).
    repeat="auto": when every call is under 100 ms, a round runs each one 3 times in a row and
    keeps the last 2: the first absorbs the switch from the previous call (caches; on the CPU, the
    malloc heap another call's buffers left behind, which can make a fresh output page-fault).
    skip_errors: a call that raises RuntimeError while warming up (e.g. an SDPA backend that
    does not take the case) is left out instead of stopping the run.

    Returns ({name: median ms}, info) with info = {"rounds": n, "skipped": {name: reason},
    "times": {name: [ms per kept repeat]}}."""
    device = torch.device(device)
    live, estimate, skipped = {}, {}, {}
    for name, call in calls.items():
        fn, setup = call if isinstance(call, tuple) else (call, None)
        try:
            for _ in range(max(1, warmup)):
                estimate[name] = time_once_ms(fn, device, setup)
        except RuntimeError as e:
            if not skip_errors:
                raise
            skipped[name] = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
            estimate.pop(name, None)
            continue
        live[name] = (fn, setup)
    if not live:
        return {}, {"rounds": 0, "skipped": skipped, "times": {}}
    if repeat == "auto":
        repeat = 3 if max(estimate.values()) < 100 else 1
    if rounds is None:
        rounds = int(max(3, min(1000, budget_s * 1e3 * len(live) / (repeat * sum(estimate.values())))))
    times = {name: [] for name in live}
    for _ in range(rounds):
        for name, (fn, setup) in live.items():
            for r in range(repeat):
                ms = time_once_ms(fn, device, setup)
                if r > 0 or repeat == 1:
                    times[name].append(ms)
    return {name: statistics.median(t) for name, t in times.items()}, \
        {"rounds": rounds, "skipped": skipped, "times": times}


def step(fn, args, mode, wrt=None, grad=None):
    """One forward ("fwd": fn(*args) under no_grad) or forward+backward ("fwd+bwd": the gradient
    of fn(*args) with respect to wrt, default the args that require grad, by torch.autograd.grad,
    so no provider pays for accumulating into .grad; grad: the output's gradient, None for a
    scalar output)."""
    if mode == "fwd":
        def forward():
            with torch.no_grad():
                return fn(*args)
        return forward
    if mode != "fwd+bwd":
        raise ValueError(f"mode {mode!r}: one of {MODES}")
    inputs = tuple(wrt) if wrt is not None else tuple(a for a in args if torch.is_tensor(a) and a.requires_grad)

    def forward_backward():
        return torch.autograd.grad(fn(*args), inputs, grad)
    return forward_backward


def peak_memory_bytes(fn, device):
    """Peak bytes allocated by torch while fn() runs, above what was allocated before it.

    CUDA: the caching allocator's high-water mark. CPU: the allocation timeline recorded by
    torch.profiler (profile_memory=True), summed in time order."""
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each op event carries the bytes it allocated less those it freed itself (children
    # excluded): counted at its start when positive (allocations happen in leaf ops such as
    # aten::empty), at its end when negative (what an op frees, it frees by its end).
    # "[memory]" events are allocations/frees outside any op. The running sum in time order
    # is the allocation timeline.
    deltas = []
    for e in prof.events():
        usage = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        if usage:
            deltas.append((e.time_range.start if usage > 0 else e.time_range.end, usage))
    deltas.sort()
    current = peak = 0
    for _, delta in deltas:
        current += delta
        peak = max(peak, current)
    return peak


_limit_cache = {}


def copy_bandwidth_gbs(device, nbytes=256 * 2**20):
    """Measured device memory bandwidth: bytes read plus bytes written per second by a large copy
    (measured once a process and device)."""
    key = ("copy_gbs", str(torch.device(device)), nbytes)
    if key not in _limit_cache:
        src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
        dst = torch.empty_like(src)
        ms = time_ms(lambda: dst.copy_(src), device, warmup=3, reps=20)
        _limit_cache[key] = 2 * nbytes / (ms * 1e-3) / 1e9
    return _limit_cache[key]


def matmul_tflops(device, dtype=None, n=None):
    """Measured dense matmul rate in TFLOP/s: sgemm on the CPU, bf16 tensor cores on CUDA
    (measured once a process, device and dtype)."""
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    n = n or (8192 if device.type == "cuda" else 2048)
    key = ("matmul_tflops", str(device), dtype, n)
    if key not in _limit_cache:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        ms = time_ms(lambda: a @ b, device, warmup=2, reps=10)
        _limit_cache[key] = 2 * n**3 / (ms * 1e-3) / 1e12
    return _limit_cache[key]


LIMITS = {"copy_gbs": copy_bandwidth_gbs, "matmul_tflops": matmul_tflops}


def environment(device):
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
    }


def markdown_table(rows, columns):
    """rows: list of dicts; columns: list of (key, header, format) with format a str.format spec."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    lines = [head, rule]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("-" if value is None else (fmt.format(value) if fmt else str(value)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser, providers=None, quick="fewer repeats, the default shape only", reps=None):
    """The flags every op benchmark takes: --device, --quick, --threads, --no-write, --no-compile,
    --tag; --providers when a default list is given (the reference provider always runs); --reps
    when reps, the timed rounds {"cpu": (default, quick), "cuda": (default, quick)}, is given
    (rounds(args, device, reps) is then the number to use)."""
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--quick", action="store_true", help=quick + " (results: <bench>_quick_<device>)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile providers")
    if providers:
        parser.add_argument("--providers", default=providers, help=f"a subset of {providers}")
    if reps:
        text = ", ".join(f"{d} {full} ({q} with --quick)" for d, (full, q) in reps.items())
        parser.add_argument("--reps", type=int, default=None, help=f"timed rounds (default: {text})")
    add_tag_argument(parser)


def rounds(args, device, reps):
    """The timed rounds for this run: --reps, else reps' default for the device (its quick entry
    with --quick)."""
    if getattr(args, "reps", None):
        return args.reps
    full, quick = reps[torch.device(device).type]
    return quick if args.quick else full


class Bench:
    """One op benchmark run: the device and its measured limits, the rows, the results file.

    name: the results' stem (bench/results/<name>[_quick][_<tag>]_<device>.json/.md); args: the
    parsed add_arguments flags; references: the provider(s) each row's speed-up is relative to
    (a row key vs_<ref>); limits: the LIMITS measured at the start (others are measured when a
    row first needs them); rounds / budget_s / warmup / repeat / skip_errors: round_robin_ms's defaults for
    every compare (each call may override them)."""

    def __init__(self, name, args, *, references=("torch",), limits=(), rounds=None, budget_s=None,
                 warmup=1, repeat=1, skip_errors=False):
        self.device = pick_device(args.device)
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        self.name = tagged(name + ("_quick" if getattr(args, "quick", False) else ""), getattr(args, "tag", None))
        self.write_files = not getattr(args, "no_write", False)
        self.no_compile = getattr(args, "no_compile", False)
        self.references = tuple(references)
        self.timing = {"rounds": rounds, "budget_s": budget_s, "warmup": warmup, "repeat": repeat,
                       "skip_errors": skip_errors}
        self.rows, self.label_keys, self.rounds = [], [], set()
        self.limits = {}
        for limit in limits:
            self.limit(limit)
        limit_text = ", ".join(f"{k} {v:.4g}" for k, v in self.limits.items())
        print(f"{name} on {device_name(self.device)}{': ' + limit_text if limit_text else ''}", flush=True)

    def wanted(self, providers, selection=None):
        """providers: [(name, fn)] with fn None where it needs the missing extension; those, those
        not in the comma-separated selection (the references always are) and, with --no-compile,
        those named compile*, are left out."""
        chosen = set(selection.split(",")) | set(self.references) if selection else None
        return [(n, fn) for n, fn in providers if fn is not None and (chosen is None or n in chosen)
                and not (self.no_compile and n.startswith("compile"))]

    def limit(self, key):
        if key not in self.limits:
            self.limits[key] = LIMITS[key](self.device)
        return self.limits[key]

    def compare(self, labels, calls, *, nbytes=None, flops=None, copy_of=None, peak=True, **timing):
        """Time calls ({provider: fn or (fn, setup)}) in interleaved rounds and add one row each.

        labels: the row's describing columns ({"shape": "8192x1000", "mode": "fwd"}); nbytes: the
        bytes the op must move (GB/s, and the fraction of copy_gbs); flops: its FLOPs (GFLOP/s,
        and the fraction of matmul_tflops); copy_of: a tensor whose copy is timed in the same
        rounds (its GB/s, in the row as copy_gbs: the bandwidth under the same load)."""
        timing = {**self.timing, **timing}
        calls = dict(calls)
        if copy_of is not None:
            dst = torch.empty_like(copy_of)
            calls["(copy)"] = lambda: dst.copy_(copy_of)
        label = " ".join(str(v) for v in labels.values())
        medians, info = round_robin_ms(calls, self.device, **timing)
        for name, reason in info["skipped"].items():
            print(f"  skip {label} {name}: {reason}")
        self.rounds.add(info["rounds"])
        copy_gbs = None
        if copy_of is not None:
            copy_gbs = 2 * copy_of.numel() * copy_of.element_size() / (medians.pop("(copy)") * 1e-3) / 1e9
            del dst
        self.label_keys += [k for k in labels if k not in self.label_keys]
        group = []
        for name, ms in medians.items():
            row = {**labels, "provider": name, "ms": ms, "rounds": info["rounds"]}
            if nbytes:
                row["gbs"] = nbytes / (ms * 1e-3) / 1e9
                row["copy_frac"] = row["gbs"] / self.limit("copy_gbs")
            if copy_gbs is not None:
                row["copy_gbs"] = copy_gbs
            if flops:
                row["gflops"] = flops / (ms * 1e-3) / 1e9
                row["matmul_frac"] = row["gflops"] / (self.limit("matmul_tflops") * 1e3)
            for ref in self.references:
                row[f"vs_{ref}"] = medians[ref] / ms if ref in medians else None
            if peak:
                fn, setup = calls[name] if isinstance(calls[name], tuple) else (calls[name], None)
                if setup:
                    setup()
                row["peak_mb"] = peak_memory_bytes(fn, self.device) / 2**20
            group.append(row)
            print("  " + self.describe(row, label), flush=True)
        self.rows += group
        return group

    @staticmethod
    def describe(row, label):
        text = f"{label} {row['provider']:>12}: {row['ms']:9.3f} ms"
        if "gbs" in row:
            text += f" {row['gbs']:7.1f} GB/s ({row['copy_frac']:5.1%} of copy)"
        if "copy_gbs" in row:
            text += f" [same-round copy {row['copy_gbs']:.1f} GB/s]"
        if "gflops" in row:
            text += f" {row['gflops']:8.1f} GFLOP/s ({row['matmul_frac']:5.1%} of matmul)"
        text += "".join(f" x{row[k]:5.2f} vs {k[3:]}" for k in row if k.startswith("vs_") and row[k])
        if "peak_mb" in row:
            text += f" peak {row['peak_mb']:8.1f} MB"
        return text

    def columns(self, headers):
        """The table's columns: the labels (headers: {key: header or (header, format)}), the
        provider, then the metrics any row has."""
        def label(key):
            header = headers.get(key, key)
            return (key,) + (tuple(header) if isinstance(header, tuple) else (header, ""))
        cols = [label(k) for k in self.label_keys]
        cols += [("provider", "provider", ""), ("ms", "median ms", "{:.3f}")]
        have = set().union(*self.rows) if self.rows else set()
        metrics = [("gbs", "eff. GB/s", "{:.1f}"), ("copy_frac", "of copy bw", "{:.1%}"),
                   ("copy_gbs", "same-round copy GB/s", "{:.1f}"), ("gflops", "GFLOP/s", "{:.1f}"),
                   ("matmul_frac", "of matmul", "{:.1%}")]
        metrics += [(f"vs_{ref}", f"vs {ref}", "{:.2f}x") for ref in self.references]
        metrics += [("peak_mb", "peak MB", "{:.1f}")]
        return cols + [m for m in metrics if m[0] in have]

    def write(self, notes="", headers=None):
        """Print the table and, unless --no-write, write it to bench/results (write_results);
        headers: the label columns' headers (see columns)."""
        timing = self.timing
        how = ("CUDA events around each repeat, the L2 cache flushed before it"
               if self.device.type == "cuda" else "perf_counter around each repeat")
        rounds = "/".join(str(r) for r in sorted(self.rounds))
        repeat = ("; rounds of short calls run each 3 times, keeping the last 2"
                  if timing["repeat"] == "auto" else "")
        notes = (notes + "\n\n" if notes else "") + (
            f"Timing: median of {rounds} rounds interleaved across providers (A, B, C, A, B, C, ...)"
            f"{repeat}, after {max(1, timing['warmup'])} untimed call(s) each; {how}. "
            f"Speed-ups (vs ...) are same-run ratios of those medians.")
        columns = self.columns(headers or {})
        if self.write_files:
            write_results(self.name, self.device, self.rows, columns, self.limits, notes)
        else:
            print(markdown_table(self.rows, columns))


def add_tag_argument(parser):
    """--tag: a run with other flags than the defaults (a subset of providers, one shape) writes
    its own results file instead of replacing the full table (bench/run_all.sh uses it)."""
    parser.add_argument("--tag", type=lambda s: s if re.fullmatch(r"[A-Za-z0-9_.-]+", s) else
                        parser.error(f"--tag {s!r}: letters, digits, '.', '_' and '-' only"),
                        help="appended to the results' file name: <bench>_<tag>_<device>.md")


def tagged(name, tag):
    return f"{name}_{tag}" if tag else name


def write_results(name, device, rows, columns, limits, notes=""):
    """Print the table and write bench/results/<name>_<device>.json and .md."""
    env = environment(device)
    table = markdown_table(rows, columns)
    limit_text = ", ".join(f"{k} {v:.4g}" for k, v in limits.items())
    markdown = (f"# {name} on {env['device']}\n\n{env['date']}, torch {env['torch']}"
                f"{', CUDA ' + env['cuda'] if env['cuda'] else ''}, {env['threads']} CPU threads.\n"
                f"Measured limits in this run: {limit_text}.\n\n{table}\n")
    if notes:
        markdown += f"\n{notes}\n"
    print(markdown)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stem = os.path.join(RESULTS_DIR, f"{name}_{device_slug(device)}")
    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, "limits": limits, "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown)
    print(f"wrote {stem}.json and {stem}.md")
