"""Tests of the CUDA emulator itself (tests/cuda_emu): its semantics (16-bit conversions against
torch's, WMMA against a float64 matmul, shuffles), each error it must report, and planted bugs in
copies of our real kernel files that the race check and the memory check must catch.

Planted bugs (each in a copy of csrc/ under a temp dir; the working tree is untouched):
  bias_gelu.cu         the one __syncthreads of the bias-gradient reduction removed    -> RaceError
  causal_attention.cu  the __syncwarp between S = Q K^T and the softmax removed        -> RaceError
  causal_attention.cu  the __syncthreads before the next K, V tiles removed             -> RaceError
  bias_gelu.cu         that __syncthreads moved under `if (group == 0)`                 -> divergent barrier
  dropout_add.cu       the scalar loop's bound `n0 + e < n` made `<=`: reads x[n]       -> out-of-bounds read
  causal_attention.cu  delta_s[row + 1]: a load past the end of shared memory           -> out-of-bounds read
"""
import ctypes
import math

import pytest
import torch

import cuda_emu

pytestmark = [pytest.mark.emulated,
              pytest.mark.skipif(cuda_emu.unavailable() is not None, reason=str(cuda_emu.unavailable()))]


@pytest.fixture(scope="module")
def selftest():
    return cuda_emu.load("selftest")


def p(x):
    return ctypes.c_void_p(x)


# ---------------------------------------------------------------------------------------------
# Semantics

@pytest.mark.parametrize("kind,dtype", [(0, torch.float16), (1, torch.bfloat16)])
def test_16bit_conversions_match_torch(selftest, kind, dtype):
    """Round to nearest even, subnormals, overflow to inf, NaN: bit for bit as torch converts."""
    g = torch.Generator().manual_seed(kind)
    bits = torch.randint(-2**31, 2**31 - 1, (200000,), generator=g, dtype=torch.int64).to(torch.int32)
    special = torch.tensor([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e-8, 2.0**-24, 2.0**-25, 2.0**-25 * 1.5,
                            6.1e-5, 3.0e38, float("inf"), -float("inf"), 1 + 2.0**-11, 1 + 3 * 2.0**-11,
                            1 + 2.0**-8, 1 + 3 * 2.0**-8], dtype=torch.float32)
    x = torch.cat([bits.view(torch.float32), special, torch.randn(10000, generator=g) * 1e-6])
    x = x[~x.isnan()]
    out = torch.empty(x.numel(), dtype=torch.int16)
    selftest.dll.emu_narrow(kind, p(x.data_ptr()), p(out.data_ptr()), ctypes.c_int64(x.numel()))
    ref = x.to(dtype).view(torch.int16)
    assert torch.equal(out, ref), f"first mismatch at {x[(out != ref).nonzero()[0]].item()!r}"
    nans = torch.tensor([float("nan"), -float("nan")])
    nan = torch.empty(2, dtype=torch.int16)
    selftest.dll.emu_narrow(kind, p(nans.data_ptr()), p(nan.data_ptr()), ctypes.c_int64(2))
    assert nan.view(dtype).isnan().all()
    # widening: every 16-bit pattern
    allbits = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16)
    wide = torch.empty(allbits.numel(), dtype=torch.float32)
    selftest.dll.emu_widen(kind, p(allbits.data_ptr()), p(wide.data_ptr()), ctypes.c_int64(allbits.numel()))
    ref = allbits.view(dtype).float()
    assert torch.equal(wide.isnan(), ref.isnan())
    ok = ~ref.isnan()
    assert torch.equal(wide[ok].view(torch.int32), ref[ok].view(torch.int32))


@pytest.mark.parametrize("a_col", [0, 1])
@pytest.mark.parametrize("b_col", [0, 1])
@pytest.mark.parametrize("d_col", [0, 1])
def test_wmma_layouts_and_ldm(selftest, a_col, b_col, d_col):
    """D = A B + C with A, B read row- or column-major at a pitch (ldm) wider than the tile, D
    stored either way: as the WMMA documentation defines them."""
    g = torch.Generator().manual_seed(4 * a_col + 2 * b_col + d_col)
    lda, ldb, ldc, ldd = 24, 40, 20, 28
    A = torch.randn(16, 16, generator=g).half()
    B = torch.randn(16, 16, generator=g).half()
    C = torch.randn(16, 16, generator=g)

    def lay(M, ld, col, dtype):  # M stored at pitch ld, row or column major
        buf = torch.full((16 * ld,), float("nan"), dtype=dtype)
        view = buf.as_strided((16, 16), (1, ld) if col else (ld, 1))
        view.copy_(M)
        return buf

    with cuda_emu.Buffers(selftest) as b:
        ap = b.put(lay(A, lda, a_col, torch.float16), "a")
        bp = b.put(lay(B, ldb, b_col, torch.float16), "b")
        cp = b.put(lay(C, ldc, 0, torch.float32), "c")
        dp = b.put(torch.full((16 * ldd,), float("nan")), "d")
        selftest.call("selftest_wmma", a_col, b_col, p(ap), lda, p(bp), ldb, p(cp), ldc, p(dp), ldd, d_col)
        d = b.get(dp, (16 * ldd,), torch.float32)
    D = d.as_strided((16, 16), (1, ldd) if d_col else (ldd, 1))
    ref = A.double() @ B.double() + C.double()
    torch.testing.assert_close(D.double(), ref, rtol=1e-5, atol=1e-5)


def test_shuffle_reduction(selftest):
    x = torch.arange(64, dtype=torch.float32)
    with cuda_emu.Buffers(selftest) as b:
        ip, op = b.put(x, "in"), b.empty((64,), torch.float32, "out")
        selftest.call("selftest_shuffle", p(ip), p(op))
        out = b.get(op, (64,), torch.float32)
    assert out[:32].eq(x[:32].sum()).all() and out[32:].eq(x[32:].sum()).all()


def test_race_check_catches_a_missing_barrier(selftest):
    """The same kernel with and without its __syncthreads: only the second differs by schedule."""
    def run(with_barrier):
        with cuda_emu.Buffers(selftest) as b:
            op = b.empty((128,), torch.int32, "out")
            selftest.call("selftest_neighbour", p(op), 128, with_barrier)
            return {"out": b.get(op, (128,), torch.int32)}
    out = cuda_emu.race_checked(lambda: run(1), selftest)["out"]
    assert torch.equal(out, (torch.arange(128).add(1) % 128 * 3).int())
    with pytest.raises(cuda_emu.RaceError, match="differs between thread schedules"):
        cuda_emu.race_checked(lambda: run(0), selftest)


@pytest.mark.parametrize("which,message", [
    (0, r"divergent __syncthreads .*exited"),
    (1, r"divergent __syncthreads: this thread reached the one at .*selftest.cu:\d+ while other threads wait at "
        r".*selftest.cu:\d+"),
    (2, r"divergent __shfl_xor_sync|exited while other lanes"),
    (3, r"deadlock: no thread of the block can proceed"),
])
def test_divergent_barriers_fail_clearly(selftest, which, message):
    """A barrier or collective that not every thread reaches is a hang on a GPU: here an error
    naming the kernel and the place."""
    with cuda_emu.Buffers(selftest) as b:
        op = b.empty((64,), torch.int32, "out")
        with pytest.raises(cuda_emu.EmulatorError, match=message) as e:
            selftest.call("selftest_divergent", which, p(op))
    assert "kernel " in str(e.value) and "block (0,0,0)" in str(e.value)


@pytest.mark.parametrize("placement", [0, 1])
def test_out_of_bounds_global_read_is_reported(selftest, placement):
    selftest.set_schedule(0, 0, 0, placement)
    try:
        x = torch.arange(100, dtype=torch.float32)
        with cuda_emu.Buffers(selftest) as b:
            ip, op = b.put(x, "x"), b.empty((1,), torch.float32, "out")
            selftest.call("selftest_read", p(ip), ctypes.c_int64(99), p(op))
            assert b.get(op, (1,), torch.float32).item() == 99
            index = 100 if placement == 0 else -1
            with pytest.raises(cuda_emu.EmulatorError, match=rf"out-of-bounds read of element index {index} of "
                                                             rf"buffer 'x' \(100 elements of 4 bytes\)") as e:
                selftest.call("selftest_read", p(ip), ctypes.c_int64(index), p(op))
            assert "read_kernel" in str(e.value) and "thread (0,0,0)" in str(e.value)
    finally:
        selftest.set_schedule(0, 0, 0, 0)


@pytest.mark.parametrize("placement", [0, 1])
def test_out_of_bounds_shared_memory_read_is_reported(selftest, placement):
    selftest.set_schedule(0, 0, 0, placement)
    try:
        with cuda_emu.Buffers(selftest) as b:
            op = b.empty((1,), torch.uint8, "out")
            selftest.call("selftest_smem_read", ctypes.c_int64(256), ctypes.c_int64(31), p(op))
            assert b.get(op, (1,), torch.uint8).item() == 7
            index = 256 if placement == 0 else -1
            with pytest.raises(cuda_emu.EmulatorError,
                               match=rf"out-of-bounds read of byte {index} of the dynamic shared memory \(256 bytes"):
                selftest.call("selftest_smem_read", ctypes.c_int64(256), ctypes.c_int64(index), p(op))
    finally:
        selftest.set_schedule(0, 0, 0, 0)


def test_misaligned_16_byte_access_is_reported(selftest):
    with cuda_emu.Buffers(selftest) as b:
        src = b.alloc(64, "src", misalign=0)
        dst = b.alloc(64, "dst", misalign=0)
        selftest.call("selftest_load16", p(src), p(dst))
        with pytest.raises(cuda_emu.EmulatorError, match=r"misaligned 16-byte load at 0x[0-9a-f]+ \(address % 16 = 4\)"):
            selftest.call("selftest_load16", p(src + 4), p(dst))
        with pytest.raises(cuda_emu.EmulatorError, match=r"misaligned 16-byte store .*address % 16 = 8"):
            selftest.call("selftest_load16", p(src), p(dst + 8))


def test_stack_overflow_is_reported(selftest):
    """A thread whose locals outgrow its fiber stack hits the guard page below it: an error,
    not a crash of the test process."""
    with cuda_emu.Buffers(selftest) as b:
        op = b.empty((32,), torch.int32, "out")
        selftest.call("selftest_stack", 4, p(op))
        with pytest.raises(cuda_emu.EmulatorError, match="stack overflow"):
            selftest.call("selftest_stack", 100, p(op))
        selftest.call("selftest_stack", 4, p(op))  # and the next launch runs


def test_shared_memory_over_48k_needs_the_attribute(selftest):
    with pytest.raises(cuda_emu.EmulatorError, match="more than 48 KiB of dynamic shared memory"):
        selftest.call("selftest_big_smem", 0)
    selftest.call("selftest_big_smem", 1)


# ---------------------------------------------------------------------------------------------
# Planted bugs in copies of the real kernels

def test_planted_missing_syncthreads_bias_gelu(tmp_path):
    csrc = cuda_emu.planted_copy(tmp_path, "bias_gelu.cu", "  sums[group][lane] = s;\n  __syncthreads();\n",
                                 "  sums[group][lane] = s;\n")
    lib = cuda_emu.load("bias_gelu", csrc)
    g = torch.Generator().manual_seed(0)
    x, bias, go = torch.randn(70, 40, generator=g), torch.randn(40, generator=g), torch.randn(70, 40, generator=g)
    with pytest.raises(cuda_emu.RaceError, match="output 'grad_bias' differs between thread schedules"):
        cuda_emu.race_checked(lambda: cuda_emu.bias_gelu(lib, x, bias, go), lib)
    # the real kernel passes the same check; the edited copy was built apart (cache by content)
    real = cuda_emu.load("bias_gelu")
    assert lib.path != real.path
    cuda_emu.race_checked(lambda: cuda_emu.bias_gelu(real, x, bias, go), real)


def test_planted_missing_syncwarp_attention(tmp_path):
    old = ("    rows_times_tile_t<T, D>(Ss + warp * 16 * Pitch<D>::kS, Qs + warp * 16 * Pitch<D>::kIn, Ks, n_blocks);\n"
           "    __syncwarp();\n")
    csrc = cuda_emu.planted_copy(tmp_path, "causal_attention.cu", old, old.replace("    __syncwarp();\n", ""))
    lib = cuda_emu.load("causal_attention", csrc)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 70, 32, generator=g).bfloat16() for _ in range(3))
    with pytest.raises(cuda_emu.RaceError, match="differs between thread schedules"):
        cuda_emu.race_checked(lambda: cuda_emu.attention_forward(lib, q, k, v, 0.0, 32 ** -0.5, 0, 0), lib)


def test_planted_missing_syncthreads_attention(tmp_path):
    """The barrier before the next K, V tiles are loaded over the current ones (a write after
    read): only a schedule that lets one warp run a whole tile ahead of the others shows it."""
    csrc = cuda_emu.planted_copy(tmp_path, "causal_attention.cu",
                                 "    __syncthreads();  // everyone is done with the previous K, V tiles\n", "")
    lib = cuda_emu.load("causal_attention", csrc)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 200, 32, generator=g).bfloat16() for _ in range(3))
    with pytest.raises(cuda_emu.RaceError, match="output 'out' differs between thread schedules"):
        cuda_emu.race_checked(lambda: cuda_emu.attention_forward(lib, q, k, v, 0.0, 32 ** -0.5, 0, 0), lib)


def test_planted_divergent_barrier_bias_gelu(tmp_path):
    csrc = cuda_emu.planted_copy(tmp_path, "bias_gelu.cu", "  sums[group][lane] = s;\n  __syncthreads();\n",
                                 "  sums[group][lane] = s;\n  if (group == 0) __syncthreads();\n")
    lib = cuda_emu.load("bias_gelu", csrc)
    x, bias, go = torch.randn(40, 8), torch.randn(8), torch.randn(40, 8)
    with pytest.raises(cuda_emu.EmulatorError, match=r"divergent __syncthreads at .*bias_gelu.cu:\d+: this thread "
                                                     r"exited while 32 thread\(s\) wait there") as e:
        cuda_emu.bias_gelu(lib, x, bias, go)
    assert "bias_grad_reduce_kernel<T>" in str(e.value)


def test_planted_read_past_the_end_dropout_add(tmp_path):
    csrc = cuda_emu.planted_copy(tmp_path, "dropout_add.cu", "for (int e = 0; e < 8 && n0 + e < n; ++e)",
                                 "for (int e = 0; e < 8 && n0 + e <= n; ++e)")
    lib = cuda_emu.load("dropout_add", csrc)
    x = torch.randn(1004)  # 1004 * 4 bytes: the buffer ends exactly at its guard page
    with pytest.raises(cuda_emu.EmulatorError, match=r"out-of-bounds read of element index 1004 of buffer 'src' "
                                                     r"\(1004 elements of 4 bytes\): past the end") as e:
        cuda_emu.dropout_add(lib, x, None, 0.5, 1, 0)
    assert "dropout_add_kernel<SrcT, DstT, false>" in str(e.value)


def test_planted_shared_memory_read_past_the_tile_attention(tmp_path):
    csrc = cuda_emu.planted_copy(tmp_path, "causal_attention.cu",
                                 "const float lse2 = lse_s[row], di = delta_s[row];",
                                 "const float lse2 = lse_s[row], di = delta_s[row + 1];")
    lib = cuda_emu.load("causal_attention", csrc)
    g = torch.Generator().manual_seed(0)
    q, k, v, go = (torch.randn(1, 1, 40, 32, generator=g).half() for _ in range(4))
    smem = lib.dll.emu_attention_smem_bytes(32, 1)
    fwd = cuda_emu.attention_forward(lib, q, k, v, 0.0, 32 ** -0.5, 0, 0)
    with pytest.raises(cuda_emu.EmulatorError, match=rf"out-of-bounds read of byte {smem} of the dynamic shared "
                                                     rf"memory \({smem} bytes declared at the launch\): past the end"):
        cuda_emu.attention_backward(lib, go, q, k, v, fwd["out"], fwd["lse"], 0.0, 32 ** -0.5, 0, 0)


def test_misaligned_rows_fault_in_the_attention_kernel():
    """The launcher's promise (16-byte aligned rows) matters: a q at an odd address makes the
    kernel's 16-byte tile loads fault, as on a GPU (misaligned address)."""
    lib = cuda_emu.load("causal_attention")
    base = torch.randn(1 * 1 * 7 * 32 + 1).half()
    q = base[1:].view(1, 1, 7, 32)
    k, v = torch.randn(2, 1, 1, 7, 32).half().unbind(0)
    with pytest.raises(cuda_emu.EmulatorError, match=r"(?s)misaligned 16-byte load .*causal_attention.cu"):
        cuda_emu.attention_forward(lib, q, k, v, 0.0, 32 ** -0.5, 0, 0)
