"""Start-up cost of a large corpus: time and peak memory of `gpt_pretrain.py --iters 1` of a
small model on a 4 billion token corpus (8 GB of uint16 ids, written as a sparse file, so it
takes no disk), in the three ways such a corpus comes:

    folder    data/prepare.py's layout: meta.json knows the token counts and the largest id
    raw       one raw uint16 file (no meta.json): the ids are read once, in chunks, to check them
    raw-skip  the same file with --skip-data-check: nothing is read at the start

    python bench/start_bench.py                  # 4e9 tokens
    python bench/start_bench.py --tokens 1e9 --keep /tmp/corpus

Target: each starts training in under 30 s with peak RSS under 2 GB (RSS of the run's process,
from getrusage; the file's pages that a run touches count too).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from data.shards import HEADER_BYTES, shard_header  # noqa: E402

SMALL = ["--context-len", "64", "--embed-dim", "64", "--n-head", "2", "--n-layer", "2", "--batch-size", "8",
         "--eval-iters", "1", "--iters", "1", "--num-tokens", "0", "--vocab-size", "1000", "--device", "cpu"]


def sparse_shard(path, tokens):
    """A shard whose ids are all 0 (a hole): the header, then the file extended to full size."""
    with open(path, "wb") as f:
        f.write(shard_header(tokens, "uint16"))
        f.truncate(HEADER_BYTES + 2 * tokens)


def run(data, out, extra=()):
    """(wall seconds, peak RSS in MB) of one --iters 1 run in a fresh process."""
    # time + RSS of this child alone: run it under a tiny wrapper that reports its own rusage
    wrapper = ("import resource, runpy, sys, time; t = time.perf_counter(); sys.argv = sys.argv[1:]\n"
               "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
               "finally:\n    print('BENCH', time.perf_counter() - t, "
               "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)")
    cmd = [sys.executable, "-c", wrapper, os.path.join(ROOT, "gpt_pretrain.py"), "--data", data,
           "--out-dir", out, *SMALL, *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    line = [l for l in result.stderr.splitlines() if l.startswith("BENCH")]
    if result.returncode or not line:
        sys.exit(f"the run failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    _, seconds, rss = line[-1].split()
    return float(seconds), float(rss)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=float, default=4e9)
    parser.add_argument("--keep", help="make the corpus in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()
    tokens = int(args.tokens)
    root = args.keep or tempfile.mkdtemp(prefix="start_bench_")
    folder = os.path.join(root, "folder")  # prepare.py's layout: shards of at most 2^31 - 1 tokens
    os.makedirs(folder, exist_ok=True)
    val = tokens // 100
    train_shards = [(tokens - val) // 2, tokens - val - (tokens - val) // 2]
    splits = {"train": [], "val": []}
    for split, sizes in (("train", train_shards), ("val", [val])):
        for i, n in enumerate(sizes):
            sparse_shard(os.path.join(folder, f"{split}_{i:06d}.bin"), n)
            splits[split].append({"file": f"{split}_{i:06d}.bin", "tokens": n, "max_id": 0})
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump({"vocab_size": 1000, "dtype": "uint16", "train_tokens": tokens - val, "val_tokens": val,
                   "splits": {s: {"tokens": sum(e["tokens"] for e in es), "max_id": 0, "shards": es}
                              for s, es in splits.items()}}, f)
    raw = os.path.join(root, "corpus.bin")  # one raw uint16 file: its last 10% is the validation data
    with open(raw, "wb") as f:
        f.truncate(2 * tokens)
    print(f"corpus: {tokens:,} tokens ({2 * tokens / 1e9:.1f} GB of uint16, sparse) in {root}; "
          f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    print(f"{'layout':9} {'seconds':>8} {'peak RSS MB':>12}   target: < 30 s, < 2048 MB")
    try:
        for name, data, extra in (("folder", folder, ()), ("raw", raw, ()), ("raw-skip", raw, ("--skip-data-check",))):
            seconds, rss = run(data, os.path.join(root, "out_" + name), extra)
            verdict = "ok" if seconds < 30 and rss < 2048 else "MISSED"
            print(f"{name:9} {seconds:8.1f} {rss:12.0f}   {verdict}", flush=True)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", root])


if __name__ == "__main__":
    main()
