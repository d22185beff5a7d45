"""Numpy emulation of csrc/cuda/causal_attention_kernels.cu, for checking its index math without a GPU.

Mirrors the kernels line by line: CTA -> warp -> lane loops, the shared-memory buffers as flat
arrays with the same pitches (stale regions filled with NaN, so reading one poisons the result),
WMMA load/store/mma with the documented row-/column-major semantics, bf16/fp16 rounding where the
kernel writes 16-bit values, the dropout bits of the scalar Philox definition (through
causal_attention_dropout_mask). Compared with a float64 reference: out, lse, dq, dk, dv.

    python tools/emulate_attention_cuda.py      # a few shapes, ~10 s; keep in sync with the .cu
"""
import numpy as np, torch, math, sys
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.dirname(__import__('os').path.abspath(__file__))))
import gpt_kernels
ops = torch.ops.gpt_kernels
TILE=64
def rb(x, bf):  # round to bf16/fp16 like from_float<T>
    t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    return (t.to(torch.bfloat16 if bf else torch.float16).float()).numpy()

def load_a(mem, off, ld, col=False):
    r = np.arange(16)[:, None]; c = np.arange(16)[None, :]
    return mem[off + (r + c*ld if col else r*ld + c)]
def load_b(mem, off, ld, col=False):
    k = np.arange(16)[:, None]; n = np.arange(16)[None, :]
    return mem[off + (k + n*ld if col else k*ld + n)]
def store(mem, off, acc, ld):
    r = np.arange(16)[:, None]; c = np.arange(16)[None, :]
    mem[off + r*ld + c] = acc

def keep8(mask, bh, i, jg):  # bits from the debug mask (scalar Philox)
    T = mask.shape[-1]; bits = 0
    for e in range(8):
        j = jg*8+e
        if i < T and j < T: bits |= int(mask[bh, i, j]) << e
        else: bits |= 1 << e  # beyond T: irrelevant (masked)
    return bits

def load_tile(dst, src2d, row0, T, D, kIn):
    dst[:] = 0
    for r in range(TILE):
        if row0 + r < T: dst[r*kIn: r*kIn + D] = src2d[row0 + r]

def forward(q, k, v, scale, bf, mask, keep_scale, dropout):
    BH, T, D = q.shape
    kIn, kS, kP, kO = D+8, TILE+4, TILE+8, D+4
    out = np.zeros((BH, T, D), np.float32); lse = np.zeros((BH, T), np.float32)
    ntiles = (T + 63)//64
    L2E = 1.4426950408889634
    for bh in range(BH):
        for bx in range(ntiles):
            q_tile = ntiles - 1 - bx; i0 = q_tile*TILE
            Qs = np.zeros(TILE*kIn, np.float32); Ks = np.zeros_like(Qs); Vs = np.zeros_like(Qs)
            Ss = np.full(TILE*kS, np.nan, np.float32); Ps = np.full(TILE*kP, np.nan, np.float32); Os = np.full(TILE*kO, np.nan, np.float32)
            load_tile(Qs, q[bh], i0, T, D, kIn)
            m = np.full((4, 32), -np.inf, np.float32); l = np.zeros((4, 32), np.float32)
            for warp in range(4):
                for lane in range(32):
                    r, side = lane >> 1, lane & 1; row = warp*16 + r
                    Os[row*kO + side*(D//2): row*kO + (side+1)*(D//2)] = 0
            sl2 = np.float32(scale * L2E)
            for j0 in range(0, i0 + 1, TILE):
                diagonal = j0 == i0
                load_tile(Ks, k[bh], j0, T, D, kIn); load_tile(Vs, v[bh], j0, T, D, kIn)
                for warp in range(4):
                    nb = warp + 1 if diagonal else 4
                    a = [load_a(Qs, warp*16*kIn + kk*16, kIn) for kk in range(D//16)]
                    for n in range(nb):
                        acc = np.zeros((16, 16), np.float32)
                        for kk in range(D//16):
                            acc += a[kk] @ load_b(Ks, n*16*kIn + kk*16, kIn, col=True)
                        store(Ss, warp*16*kS + n*16, acc, kS)
                    # elementwise
                    mxs = {}; sums = {}
                    for lane in range(32):
                        r, side = lane >> 1, lane & 1; row = warp*16 + r; i = i0 + row
                        mx = -np.inf
                        for c in range(side*32, side*32+32):
                            if j0 + c <= i: mx = max(mx, Ss[row*kS + c]*sl2)
                        mxs[lane] = mx
                    for lane in range(32):
                        r, side = lane >> 1, lane & 1; row = warp*16 + r; i = i0 + row
                        mx = max(mxs[lane], mxs[lane ^ 1])
                        m_new = max(m[warp, lane], mx); alpha = 2.0 ** (m[warp, lane] - m_new)
                        s = 0.0
                        for c0 in range(side*32, side*32+32, 8):
                            keep = keep8(mask, bh, i, (j0 + c0)//8) if dropout else 0xFF
                            for e in range(8):
                                c = c0 + e
                                pr = 2.0 ** (Ss[row*kS + c]*sl2 - m_new) if j0 + c <= i else 0.0
                                s += pr
                                pz = (pr*keep_scale if (keep >> e) & 1 else 0.0) if dropout else pr
                                Ps[row*kP + c] = rb(pz, bf)
                        sums[lane] = (s, alpha, m_new)
                    for lane in range(32):
                        r, side = lane >> 1, lane & 1; row = warp*16 + r
                        s, alpha, m_new = sums[lane]; s = s + sums[lane ^ 1][0]
                        l[warp, lane] = l[warp, lane]*alpha + s; m[warp, lane] = m_new
                        Os[row*kO + side*(D//2): row*kO + (side+1)*(D//2)] *= alpha
                    kb = warp + 1 if diagonal else 4
                    for n in range(D//16):
                        acc = load_a(Os, warp*16*kO + n*16, kO)
                        for kk in range(kb):
                            acc = acc + load_a(Ps, warp*16*kP + kk*16, kP) @ load_b(Vs, kk*16*kIn + n*16, kIn)
                        store(Os, warp*16*kO + n*16, acc, kO)
            for warp in range(4):
                for lane in range(32):
                    r, side = lane >> 1, lane & 1; row = warp*16 + r; i = i0 + row
                    if i < T:
                        out[bh, i, side*(D//2):(side+1)*(D//2)] = rb(Os[row*kO + side*(D//2): row*kO + (side+1)*(D//2)] / l[warp, lane], bf)
                        if side == 0: lse[bh, i] = (m[warp, lane] + math.log2(l[warp, lane])) * math.log(2)
    return out, lse

def backward(q, k, v, o, do, lse, scale, bf, mask, keep_scale, dropout):
    BH, T, D = q.shape
    kIn, kS, kP, kO = D+8, TILE+4, TILE+8, D+4
    L2E = 1.4426950408889634
    delta = (do.astype(np.float32) * o.astype(np.float32)).sum(-1)
    dq_acc = np.zeros((BH, T, D), np.float32); dk = np.zeros_like(dq_acc); dv = np.zeros_like(dq_acc)
    for bh in range(BH):
        for bx in range((T+63)//64):
            j0 = bx*TILE
            Ks = np.zeros(TILE*kIn, np.float32); Vs = np.zeros_like(Ks); Qs = np.zeros_like(Ks); dOs = np.zeros_like(Ks)
            SdP = np.full(2*TILE*kS, np.nan, np.float32)  # Ss then dPs (contiguous, staging aliases)
            PZs = np.full(TILE*kP, np.nan, np.float32); dSs = np.full(TILE*kP, np.nan, np.float32)
            load_tile(Ks, k[bh], j0, T, D, kIn); load_tile(Vs, v[bh], j0, T, D, kIn)
            dK = [[np.zeros((16,16), np.float32) for _ in range(D//16)] for _ in range(4)]
            dV = [[np.zeros((16,16), np.float32) for _ in range(D//16)] for _ in range(4)]
            sl2 = np.float32(scale*L2E)
            for i0 in range(j0, T, TILE):
                diagonal = i0 == j0
                load_tile(Qs, q[bh], i0, T, D, kIn); load_tile(dOs, do[bh], i0, T, D, kIn)
                lse_s = np.array([lse[bh, i0+t]*L2E if i0+t < T else 0 for t in range(64)], np.float32)
                delta_s = np.array([delta[bh, i0+t] if i0+t < T else 0 for t in range(64)], np.float32)
                for warp in range(4):
                    nb = warp + 1 if diagonal else 4
                    for (dst_off, src) in ((0, Qs), (TILE*kS, dOs)):
                        a = [load_a(src, warp*16*kIn + kk*16, kIn) for kk in range(D//16)]
                        B = Ks if src is Qs else Vs
                        for n in range(nb):
                            acc = np.zeros((16,16), np.float32)
                            for kk in range(D//16): acc += a[kk] @ load_b(B, n*16*kIn + kk*16, kIn, col=True)
                            store(SdP, dst_off + warp*16*kS + n*16, acc, kS)
                    for lane in range(32):
                        r, side = lane >> 1, lane & 1; row = warp*16 + r; i = i0 + row
                        lse2, di = lse_s[row], delta_s[row]
                        for c0 in range(side*32, side*32+32, 8):
                            keep = keep8(mask, bh, i, (j0+c0)//8) if (dropout and i < T) else 0xFF
                            for e in range(8):
                                c = c0 + e
                                valid = (j0 + c <= i) and (i < T)
                                pr = 2.0 ** (SdP[row*kS + c]*sl2 - lse2) if valid else 0.0
                                z = (keep_scale if (keep >> e) & 1 else 0.0) if dropout else 1.0
                                dp = SdP[TILE*kS + row*kS + c] if valid else 0.0
                                PZs[row*kP + c] = rb(pr*z, bf); dSs[row*kP + c] = rb(pr*(dp*z - di), bf)
                for warp in range(4):
                    kb0 = warp if diagonal else 0
                    for n in range(D//16):
                        for kk in range(kb0, 4):
                            dV[warp][n] += load_a(PZs, kk*16*kP + warp*16, kP, col=True) @ load_b(dOs, kk*16*kIn + n*16, kIn)
                            dK[warp][n] += load_a(dSs, kk*16*kP + warp*16, kP, col=True) @ load_b(Qs, kk*16*kIn + n*16, kIn)
                SdP[:] = np.nan  # S, dP are dead: staging may overwrite
                for warp in range(4):
                    kb = warp + 1 if diagonal else 4
                    stage_off = warp*16*kO
                    for n in range(D//16):
                        acc = np.zeros((16,16), np.float32)
                        for kk in range(kb): acc += load_a(dSs, warp*16*kP + kk*16, kP) @ load_b(Ks, kk*16*kIn + n*16, kIn)
                        store(SdP, stage_off + n*16, acc, kO)
                    for idx in range(16*D):
                        rr, c = idx // D, idx % D; i = i0 + warp*16 + rr
                        if i < T: dq_acc[bh, i, c] += SdP[stage_off + rr*kO + c]
            for warp in range(4):
                stage_off = warp*16*kO
                for which, frags, dst, sc in (("k", dK, dk, scale), ("v", dV, dv, 1.0)):
                    for n in range(D//16): store(SdP, stage_off + n*16, frags[warp][n], kO)
                    for idx in range(16*D):
                        rr, c = idx // D, idx % D; j = j0 + warp*16 + rr
                        if j < T: dst[bh, j, c] = rb(SdP[stage_off + rr*kO + c]*sc, bf)
    return rb(dq_acc*scale, bf), dk, dv

def run(B, H, T, D, p, bf=True):
    torch.manual_seed(T)
    dt = torch.bfloat16 if bf else torch.float16
    q, k, v = [torch.randn(B, H, T, D).to(dt).float() for _ in range(3)]
    scale = 1/math.sqrt(D)
    rng = torch.tensor([12345, 8])
    keepm = ops.causal_attention_dropout_mask(B, H, T, p, rng) if p > 0 else torch.ones(B, H, T, T, dtype=torch.bool)
    mask = keepm.reshape(B*H, T, T).numpy()
    ks = 1/(1-p)
    out, lse = forward(q.reshape(B*H,T,D).numpy(), k.reshape(B*H,T,D).numpy(), v.reshape(B*H,T,D).numpy(), scale, bf, mask, ks, p > 0)
    qd, kd, vd = [t.double().requires_grad_() for t in (q, k, v)]
    s = (qd @ kd.transpose(-1,-2))*scale
    s = s.masked_fill(torch.ones(T,T,dtype=torch.bool).triu(1), float('-inf'))
    lse_ref = torch.logsumexp(s, -1)
    a = s.softmax(-1)
    if p > 0: a = a*keepm/(1-p)
    ref = a @ vd
    g = torch.randn(B, H, T, D).to(dt).float()
    gr = torch.autograd.grad(ref, (qd, kd, vd), g.double())
    def rel(x, y): x = torch.as_tensor(x).double().reshape(y.shape); return ((x-y).norm()/(y.norm()+math.sqrt(y.numel()))).item()
    res = [rel(out, ref.detach()), rel(lse, lse_ref.detach())]
    dq, dk, dv = backward(q.reshape(B*H,T,D).numpy(), k.reshape(B*H,T,D).numpy(), v.reshape(B*H,T,D).numpy(),
                          rb(out, bf), g.reshape(B*H,T,D).numpy(), lse, scale, bf, mask, ks, p > 0)
    res += [rel(dq, gr[0]), rel(dk, gr[1]), rel(dv, gr[2])]
    print(B, H, T, D, p, 'bf16' if bf else 'fp16', ' '.join(f'{x:.2e}' for x in res), flush=True)

if __name__ == '__main__':
    for args in [(1,1,1,32,0.0), (1,2,7,32,0.0), (1,1,65,32,0.3), (1,1,130,64,0.0), (1,1,130,32,0.2)]:
        run(*args)
    run(1,1,70,32,0.0,bf=False)
