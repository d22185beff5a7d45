"""Shared measuring tools for the benchmarks in bench/ (timing, hardware limits, results).

Every benchmark puts our kernels beside the PyTorch path in the same run and relates both to a
hardware limit measured in that run too (copy bandwidth, matmul rate), because machines of the
same kind differ by up to 2x: only same-run ratios mean anything.

On CUDA, times come from CUDA events around each repeat, with the L2 cache flushed between
repeats (so a kernel is not timed reading data the previous repeat left in cache); on the CPU
from perf_counter. Both report the median of many repeats after warm-up.
"""
import datetime
import json
import os
import platform
import re
import statistics
import time

import torch

# GPT_BENCH_RESULTS: another folder (bench/run_all.sh's CPU self-check), so a trial run never
# replaces the committed tables
RESULTS_DIR = os.environ.get("GPT_BENCH_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def pick_device(requested=None):
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def have_extension():
    """Whether gpt_kernels (built by pip install -e .) imports; says so when it does not."""
    try:
        import gpt_kernels  # noqa: F401
        return True
    except ImportError as e:
        print(f"the extension is not built ({e}; pip install -e .): timing PyTorch only")
        return False


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


def time_ms(fn, device, warmup=3, reps=20, min_seconds=0.0, setup=None):
    """Median milliseconds of fn() over reps (more while under min_seconds of timing).

    setup(), when given, runs before each repeat outside the timed region (e.g. to make fresh
    inputs that fn consumes)."""
    device = torch.device(device)
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    sync(device)
    times = []
    started = time.perf_counter()
    while len(times) < reps or time.perf_counter() - started < min_seconds:
        if setup:
            setup()
        if device.type == "cuda":
            flush_l2(device)
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 10 * reps:
            break
    return statistics.median(times)


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


def copy_bandwidth_gbs(device, nbytes=256 * 2**20):
    """Measured device memory bandwidth: bytes read plus bytes written per second by a large copy."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=3, reps=20)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def matmul_tflops(device, dtype=None, n=None):
    """Measured dense matmul rate in TFLOP/s: sgemm on the CPU, bf16 tensor cores on CUDA."""
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: a @ b, device, warmup=2, reps=10)
    return 2 * n**3 / (ms * 1e-3) / 1e12


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
