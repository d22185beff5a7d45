"""The model of gpt_pretrain.py with --kernels ext (fused attention, residual dropout, bias + GELU and loss)
against the PyTorch path: the same function with dropout off, its own masks with dropout on, and
50 training steps that follow each other. Also what gpt_kernels tells such a model before it
runs: gpt_kernels.unsupported() and gpt_kernels.linear_bias_gelu()."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpt_kernels  # the extension must be built: pip install -e .
from conftest import ROOT, run_script, train_losses
from gpt_pretrain import GPT, GPTConfig, loss_function
from op_checks import DEVICES


def config(kernels, dropout=0.0, gelu="exact"):
    # head size 32: a size the fused attention takes (32, 64, 128)
    return GPTConfig(context_len=40, vocab_size=97, embed_dim=64, n_head=2, n_layer=2, ff_dim=256,
                     dropout=dropout, kernels=kernels, gelu=gelu)


def twin_models(dropout=0.0, gelu="exact"):
    torch.manual_seed(0)
    ours = GPT(config("ext", dropout, gelu))
    reference = GPT(config("torch", dropout, gelu))
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def loss_and_grads(model, x, y):
    logits = model(x)
    loss = loss_function(model.config.kernels)(logits.view(-1, logits.size(-1)), y.view(-1))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return logits, loss, grads


@pytest.mark.parametrize("gelu", ["exact", "tanh"])  # tanh: a model started from GPT-2's weights
def test_ext_matches_torch_path_without_dropout(gelu):
    ours, reference = twin_models(gelu=gelu)
    x = torch.randint(0, 97, (3, 37))  # T not a multiple of any tile
    y = torch.randint(0, 97, (3, 37))
    logits, loss, grads = loss_and_grads(ours.train(), x, y)
    logits_ref, loss_ref, grads_ref = loss_and_grads(reference.train(), x, y)
    torch.testing.assert_close(logits, logits_ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(loss, loss_ref, atol=1e-6, rtol=1e-6)
    for (name, _), g, g_ref in zip(ours.named_parameters(), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=2e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_ext_dropout_is_seeded_and_off_in_eval():
    ours, reference = twin_models(dropout=0.1)
    x = torch.randint(0, 97, (2, 40))
    ours.train()
    torch.manual_seed(7)
    a = ours(x)
    b = ours(x)
    torch.manual_seed(7)
    c = ours(x)
    assert torch.equal(a, c), "the same seed must give the same masks"
    assert not torch.equal(a, b), "each call must draw new masks"
    with torch.no_grad():  # eval: no dropout on either path, so they agree
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), atol=2e-5, rtol=2e-5)


# ---------------------------------------------------------------------------------------------
# Training check: 50 steps with --kernels ext follow --kernels torch: to 1e-4 on the CPU (fp32
# throughout); on CUDA under bf16 autocast, where the two paths round activations to bf16 in
# different places (fused kernels vs separate ops), to 5e-2 of a loss near 5.5 (an allowance,
# not yet measured on a GPU)

@pytest.mark.slow
@pytest.mark.parametrize("device,tolerance", [("cpu", 1e-4), pytest.param("cuda", 5e-2, marks=pytest.mark.cuda)])
def test_training_with_ext_kernels_follows_torch(tmp_path, device, tolerance):
    data = tmp_path / "tokens.bin"
    np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint16).tofile(data)
    env = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    losses = {}
    for kernels in ("torch", "ext"):
        out = tmp_path / kernels
        run_script("--data", data, "--out-dir", out, "--iters", 50, "--kernels", kernels, "--seed", 0,
                   "--dropout", 0, "--log-interval", 1, "--eval-interval", 50, "--vocab-size", 256,
                   "--n-layer", 2, "--embed-dim", 64, "--n-head", 2, "--context-len", 32, "--batch-size", 8,
                   "--device", device, timeout=600, env=env)
        losses[kernels] = train_losses(out)
    assert len(losses["torch"]) >= 50, f"expected 50 training-loss lines, got {len(losses['torch'])}"
    assert losses["ext"].keys() == losses["torch"].keys()
    worst = max(abs(losses["ext"][i] - losses["torch"][i]) for i in losses["torch"])
    assert worst <= tolerance, f"--kernels ext drifts from --kernels torch by {worst:.2e} (> {tolerance:g})"


# ---------------------------------------------------------------------------------------------
# gpt_kernels.unsupported(): the kernels' limits, asked of gpt_kernels instead of hard-coded

def test_unsupported_head_sizes_are_the_kernels():
    """None exactly for the head sizes the attention kernels take (tests/test_causal_attention.py
    holds HEAD_SIZES to the kernels); otherwise a sentence naming them and the size asked."""
    for head_size in range(1, 257):
        reason = gpt_kernels.unsupported(head_size=head_size)
        if head_size in (32, 64, 128):
            assert reason is None
        else:
            assert reason == (f"the fused attention takes head sizes 32, 64 and 128 (embed_dim / n_head), "
                              f"not {head_size}: change embed_dim or n_head")
    assert gpt_kernels.unsupported() is None  # nothing asked, nothing refused


@pytest.mark.parametrize("device_type", ["mps", "xpu", "meta"])
def test_unsupported_devices(device_type):
    assert gpt_kernels.unsupported(device_type=device_type) == \
        f"the compiled kernels run on the CPU and on CUDA, not on {device_type.upper()}"
    # the device is checked after the head size, before the dtype
    assert gpt_kernels.unsupported(head_size=48, device_type=device_type).startswith("the fused attention")
    assert gpt_kernels.unsupported(device_type=device_type, dtype=torch.float32).startswith("the compiled kernels")


def test_unsupported_dtypes_are_those_the_attention_refuses(monkeypatch):
    """Every op's DTYPES for the device; today the attention's are the narrowest."""
    monkeypatch.setattr(gpt_kernels, "has_cuda_kernels", lambda: True)  # whatever this build has
    for dtype in (torch.float32, torch.float64):
        assert gpt_kernels.unsupported(device_type="cpu", dtype=dtype) is None
        assert gpt_kernels.unsupported(device_type="cuda", dtype=dtype) == (
            f"on CUDA the fused causal attention takes bfloat16 or float16 activations, not "
            f"{str(dtype)[6:]}: run the model in bfloat16 or float16 under torch.autocast")
    for dtype in (torch.bfloat16, torch.float16):
        assert gpt_kernels.unsupported(device_type="cuda", dtype=dtype) is None
        assert gpt_kernels.unsupported(device_type="cpu", dtype=dtype) == (
            f"on the CPU the fused causal attention takes float32 or float64 activations, not "
            f"{str(dtype)[6:]}: run the model in float32 or float64")
    # a dtype without a device is not checked; a model as gpt_pretrain.py trains it by default
    assert gpt_kernels.unsupported(dtype=torch.bfloat16) is None
    assert gpt_kernels.unsupported(head_size=64, device_type="cuda", dtype=torch.bfloat16) is None
    assert gpt_kernels.unsupported(head_size=32, device_type="cpu", dtype=torch.float32) is None


def test_unsupported_answers_from_each_ops_constants(monkeypatch):
    """A dtype one op's DTYPES lacks is refused, naming that op (not only the attention)."""
    narrower = {"cpu": (torch.float64,), "cuda": ()}
    monkeypatch.setattr(gpt_kernels.bias_gelu, "DTYPES", narrower)
    monkeypatch.setattr(gpt_kernels.causal_attention, "HEAD_SIZES", (16, 48))
    assert gpt_kernels.unsupported(device_type="cpu", dtype=torch.float32) == (
        "on the CPU the fused bias gelu takes float64 activations, not float32: run the model in float64")
    assert gpt_kernels.unsupported(head_size=48) is None
    assert "takes head sizes 16 and 48 (embed_dim / n_head), not 32" in gpt_kernels.unsupported(head_size=32)


def test_unsupported_cuda_without_cuda_kernels(monkeypatch):
    monkeypatch.setattr(gpt_kernels, "has_cuda_kernels", lambda: False)
    assert "built without its CUDA kernels" in gpt_kernels.unsupported(device_type="cuda")
    assert "built without its CUDA kernels" in gpt_kernels.unsupported(device_type="cuda", dtype=torch.bfloat16)
    assert gpt_kernels.unsupported(device_type="cuda", dtype=torch.float32).startswith("on CUDA")  # dtype first
    assert gpt_kernels.unsupported(device_type="cpu") is None


def test_unsupported_takes_keywords_only():
    with pytest.raises(TypeError):
        gpt_kernels.unsupported(64)


# ---------------------------------------------------------------------------------------------
# gpt_kernels.linear_bias_gelu: the MLP's first layer as the model calls it

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_linear_bias_gelu_is_linear_then_gelu(device, approximate):
    torch.manual_seed(0)
    x = torch.randn(4, 9, 48, device=device, requires_grad=True)
    w = (torch.randn(192, 48, device=device) * 0.1).requires_grad_()
    b = (torch.randn(192, device=device) * 0.1).requires_grad_()
    ours = gpt_kernels.linear_bias_gelu(x, w, b, approximate)
    ref = F.gelu(F.linear(x, w, b), approximate=approximate)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ref)
    for a, c in zip(torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_linear_bias_gelu_casts_the_bias_to_the_matmuls_dtype():
    """As under autocast: a 16-bit activation and matmul, a float32 bias parameter. The op gets
    the bias in the matmul's dtype (it takes one dtype) and the bias's gradient is float32."""
    x = torch.randn(8, 64, dtype=torch.bfloat16)
    w = torch.randn(96, 64, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(96, requires_grad=True)
    out = gpt_kernels.linear_bias_gelu(x, w, b)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert b.grad.dtype == torch.float32 and w.grad.dtype == torch.bfloat16
    ref = F.gelu(F.linear(x.float(), w.float(), b.float()))
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_bias_gelu_under_autocast_on_cuda(dtype):
    x = torch.randn(8, 64, device="cuda", requires_grad=True)
    w = torch.randn(96, 64, device="cuda", requires_grad=True)
    b = torch.randn(96, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=dtype):
        out = gpt_kernels.linear_bias_gelu(x, w, b)
        ref = F.gelu(F.linear(x, w, b))
    assert out.dtype == dtype
    out.float().sum().backward()
    assert b.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
