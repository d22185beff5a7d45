"""support/runtime.py: the allocator setting the training script applies on the CPU."""
import platform
import subprocess
import sys

from conftest import ROOT

# Allocate, free and re-allocate a 64 MB tensor; print whether the setting took and how many
# pages the second allocation faulted in (glibc serves it with a fresh mmap by default).
PROBE = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from support.runtime import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.empty(16 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(16 * 2**20).fill_(1.0)
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(mode):
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=ROOT), mode], capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    return out[0], int(out[1])


def test_keep_freed_memory_stops_refaulting_big_tensors():
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        _, faults_default = probe("default")
        took, faults_kept = probe("keep")
        assert took == "True"
        assert faults_default > 10_000, "control: a fresh 64 MB tensor should fault in its 16384 pages"
        assert faults_kept < 1_000, f"{faults_kept} page faults re-allocating a freed 64 MB tensor"
    else:
        took, _ = probe("keep")
        assert took == "False"  # the setting is glibc's; elsewhere it must say it did nothing
