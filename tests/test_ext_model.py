"""The model of gpt_pretrain.py with --kernels ext (fused attention, residual dropout, bias + GELU and loss)
against the PyTorch path: the same function with dropout off, its own masks with dropout on."""
import pytest
import torch

import gpt_kernels  # noqa: F401  (the extension must be built: pip install -e .)
from gpt_pretrain import GPT, GPTConfig, loss_function


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

