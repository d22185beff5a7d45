"""data/prepare.py's throughput against the tokenizer's own encode_batch, and its peak memory.

    python bench/prepare_bench.py                           # 30 MB throughput corpus, 1 GB memory run
    python bench/prepare_bench.py --throughput-mb 10 --rss-mb 200    # quicker
    python bench/prepare_bench.py --rss-mb 0                # throughput only

Corpora (written to --work, default a temporary folder): .jsonl files of documents cut from this
Python's standard library source (1 to 16 KB each, shuffled), each with a header line of its own
("# document N, variant X"), repeated in a new order until the size asked for.

1. Tokenizer: a byte-level BPE of --vocab-size ids trained by prepare() on the throughput corpus
   (the time of that whole run is reported too).
2. Throughput, in the same run and alternating for --rounds rounds (a shared machine slows both
   alike): the tokenizer's encode_batch (and encode_batch_fast) on the corpus's documents,
   already in memory, in batches of 1024 (the encodings are dropped); against prepare() with
   that tokenizer.json on the .jsonl file (reading, JSON parsing, encoding, shard writing).
   Target: prepare at >= 80% of encode_batch's MB/s (best round of each). MB per CPU second
   (time.process_time, all threads) is reported too: on a machine shared with other work the
   wall-clock rates swing by 2x between rounds, CPU time much less.
3. Peak memory: `python data/prepare.py --source big.jsonl --tokenizer ...` on the --rss-mb corpus
   as a subprocess; its peak RSS from getrusage(RUSAGE_CHILDREN) (VmHWM). With --rss-train the
   tokenizer is trained in that run too (default --tokenizer-sample-bytes: 100 MB). Target < 2 GB.
Results go to bench/results/prepare_bench_cpu-<threads>threads.json and .md.
"""
import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from data.prepare import prepare, stdlib_files  # noqa: E402


def stdlib_documents(seed=0):
    """The stdlib source cut into documents of 1 to 16 KB at line boundaries."""
    rng = random.Random(seed)
    _, files = stdlib_files()
    docs = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        start = 0
        while start < len(text):
            end = text.find("\n", start + rng.randint(1024, 16384))
            end = len(text) if end < 0 else end + 1
            docs.append(text[start:end])
            start = end
    return docs


def write_corpus(path, docs, megabytes, seed=1):
    """A .jsonl of about megabytes MB: the documents, shuffled anew each pass, each with a
    header line of its own. Returns (bytes, documents)."""
    rng = random.Random(seed)
    bodies = [json.dumps(d, ensure_ascii=False)[1:-1] for d in docs]
    target, written, count = int(megabytes * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            order = list(range(len(bodies)))
            rng.shuffle(order)
            for k in order:
                line = f'{{"id": {count}, "text": "# document {count}, variant {rng.getrandbits(32):08x}\\n{bodies[k]}"}}\n'
                f.write(line)
                written += len(line.encode("utf-8")) if not line.isascii() else len(line)
                count += 1
                if written >= target:
                    break
    return os.path.getsize(path), count


def read_texts(path):
    with open(path, "rb") as f:
        return [json.loads(line)["text"] for line in f]


def encode_rate(tokenizer, texts, method, batch=1024):
    """(MB per wall second, MB per CPU second of this process) of tokenizer.<method> over texts
    in batches (encode time only)."""
    encode = getattr(tokenizer, method)
    size = sum(len(t.encode("utf-8")) for t in texts)
    seconds, cpu = 0.0, 0.0
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        t0, c0 = time.perf_counter(), time.process_time()
        encodings = encode(chunk, add_special_tokens=False)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        del encodings
    return size / 1e6 / seconds, size / 1e6 / cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--throughput-mb", type=float, default=30)
    p.add_argument("--rss-mb", type=float, default=1000, help="corpus size of the memory run (0: skip it)")
    p.add_argument("--rss-train", action="store_true", help="train the tokenizer in the memory run too")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", help="folder for the corpora and outputs (default: a temporary one)")
    args = p.parse_args()
    from tokenizers import Tokenizer

    work = args.work or tempfile.mkdtemp(prefix="prepare_bench_")
    os.makedirs(work, exist_ok=True)
    docs = stdlib_documents()
    small = os.path.join(work, "throughput.jsonl")
    small_bytes, small_docs = write_corpus(small, docs, args.throughput_mb)
    print(f"throughput corpus {small}: {small_bytes / 1e6:.1f} MB, {small_docs:,} documents")

    t0 = time.perf_counter()
    meta = prepare(small, os.path.join(work, "trained"), vocab_size=args.vocab_size, progress=False)
    trained_seconds = time.perf_counter() - t0
    tokenizer_file = os.path.join(work, "trained", "tokenizer.json")
    tokenizer = Tokenizer.from_file(tokenizer_file)
    tokens = meta["train_tokens"] + meta["val_tokens"]
    print(f"prepare with tokenizer training: {trained_seconds:.1f} s, {tokens:,} tokens")

    texts = read_texts(small)
    text_mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    rates = {"encode_batch": [], "encode_batch_fast": [], "prepare": []}
    cpu_rates = {k: [] for k in rates}
    for round_ in range(args.rounds):
        for method in ("encode_batch", "encode_batch_fast"):
            rate, cpu_rate = encode_rate(tokenizer, texts, method)
            rates[method].append(rate)
            cpu_rates[method].append(cpu_rate)
        t0, c0 = time.perf_counter(), time.process_time()
        prepare(small, os.path.join(work, "given"), tokenizer=tokenizer_file, progress=False)
        rates["prepare"].append(text_mb / (time.perf_counter() - t0))
        cpu_rates["prepare"].append(text_mb / (time.process_time() - c0))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} MB/s ({cpu_rates[k][-1]:.2f} per CPU s)"
                                               for k, v in rates.items()))
    best = {k: max(v) for k, v in rates.items()}
    cpu_best = {k: max(v) for k, v in cpu_rates.items()}
    rows = [{"what": k, "MB_per_s": round(best[k], 3), "rounds": [round(r, 3) for r in v],
             "prepare_ratio": round(best["prepare"] / best[k], 3),
             "MB_per_cpu_s": round(cpu_best[k], 3), "cpu_ratio": round(cpu_best["prepare"] / cpu_best[k], 3)}
            for k, v in rates.items()]
    rows.append({"what": "prepare + tokenizer training", "MB_per_s": round(text_mb / trained_seconds, 3),
                 "rounds": [round(trained_seconds, 1)], "prepare_ratio": None})

    rss = None
    if args.rss_mb > 0:
        big = os.path.join(work, "big.jsonl")
        big_bytes, big_docs = write_corpus(big, docs, args.rss_mb, seed=2)
        print(f"memory corpus {big}: {big_bytes / 1e6:.1f} MB, {big_docs:,} documents")
        command = [sys.executable, os.path.join(ROOT, "data", "prepare.py"), "--source", big,
                   "--out", os.path.join(work, "big")]
        command += ["--vocab-size", str(args.vocab_size)] if args.rss_train else ["--tokenizer", tokenizer_file]
        print("running", " ".join(command))
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KB on Linux
        with open(os.path.join(work, "big", "meta.json")) as f:
            big_meta = json.load(f)
        rows.append({"what": f"memory run: {big_bytes / 1e6:.0f} MB corpus"
                     + (" (tokenizer trained)" if args.rss_train else ""),
                     "MB_per_s": round(big_bytes / 1e6 / seconds, 3), "rounds": [round(seconds, 1)],
                     "prepare_ratio": None, "peak_rss_MB": round(rss, 1),
                     "tokens": big_meta["train_tokens"] + big_meta["val_tokens"]})
    from common import write_results
    notes = (f"Throughput corpus: {small_bytes / 1e6:.1f} MB .jsonl ({text_mb:.1f} MB of text, {small_docs:,} "
             f"documents), vocab {meta['vocab_size']}; best of {args.rounds} alternating rounds. "
             f"prepare / encode_batch = {best['prepare'] / best['encode_batch']:.2f} (target >= 0.8), "
             f"prepare / encode_batch_fast = {best['prepare'] / best['encode_batch_fast']:.2f}; "
             f"per CPU second (robust to a shared machine): {cpu_best['prepare'] / cpu_best['encode_batch']:.2f} "
             f"and {cpu_best['prepare'] / cpu_best['encode_batch_fast']:.2f}."
             + (f" Peak RSS of the memory run: {rss:.0f} MB (target < 2048)." if rss else ""))
    write_results("prepare_bench", "cpu", rows, [("what", "what", ""), ("MB_per_s", "MB/s (best)", "{:.3f}"),
                   ("prepare_ratio", "prepare / this", "{:.2f}"), ("MB_per_cpu_s", "MB per CPU s", "{:.3f}"),
                   ("cpu_ratio", "prepare / this, per CPU s", "{:.2f}"), ("rounds", "rounds (MB/s; seconds for runs)", ""),
                   ("peak_rss_MB", "peak RSS MB", "{:.0f}")],
                  {"cpu_threads": os.cpu_count()}, notes)


if __name__ == "__main__":
    main()
