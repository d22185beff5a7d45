"""The dataset and the model of gpt_pretrain.py: shapes, causality, the two attention paths."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt_pretrain import GPT, EpochShuffler, GPTConfig, TokenDataset, cycle, learning_rate_at


def tiny_config(**overrides):
    return GPTConfig(**{**dict(context_len=32, vocab_size=100, embed_dim=48, n_head=4, n_layer=2,
                               ff_dim=192, dropout=0.0), **overrides})


def test_dataset_length_and_shift():
    tokens = np.arange(100, dtype=np.uint16)
    dataset = TokenDataset(tokens, context_len=8)
    assert len(dataset) == 100 - 8
    x, y = dataset[5]
    assert x.dtype == torch.int64 and x.shape == (8,) and y.shape == (8,)
    assert x.tolist() == list(range(5, 13))
    assert y.tolist() == list(range(6, 14))  # y is x shifted by one
    x_last, y_last = dataset[len(dataset) - 1]
    assert y_last[-1].item() == 99  # the last window ends at the last token


def test_epoch_shuffler_resumes_mid_epoch():
    full = list(EpochShuffler(50, seed=3))  # epoch 0
    resumed = list(EpochShuffler(50, seed=3, epoch=0, start=20))
    assert sorted(full) == list(range(50)) and full != list(range(50))
    assert resumed == full[20:]
    sampler = EpochShuffler(50, seed=3)
    first, second = list(sampler), list(sampler)
    assert first == full and second != first and sorted(second) == list(range(50))


def test_cycle_repeats_the_loader():
    batches = cycle([1, 2, 3])
    assert [next(batches) for _ in range(7)] == [1, 2, 3, 1, 2, 3, 1]


def test_initial_loss_is_close_to_uniform():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=1000, n_layer=2, context_len=64)
    model = GPT(config)
    x = torch.randint(0, 1000, (8, 64))
    y = torch.randint(0, 1000, (8, 64))
    logits = model(x)
    assert logits.shape == (8, 64, 1000)
    loss = F.cross_entropy(logits.view(-1, 1000), y.view(-1))
    assert abs(loss.item() - math.log(1000)) < 0.15


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    x = torch.randint(0, 100, (4, 32))
    y = torch.randint(0, 100, (4, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(x).view(-1, 100), y.view(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1, f"could not memorise one batch: loss {loss.item():.3f}"


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_causality(attention):
    torch.manual_seed(0)
    model = GPT(tiny_config(attention=attention)).eval()
    x = torch.randint(0, 100, (2, 32))
    t = 20
    x_changed = x.clone()
    x_changed[:, t] = (x[:, t] + 1) % 100
    with torch.no_grad():
        before, after = model(x), model(x_changed)
    assert torch.equal(before[:, :t], after[:, :t]), "a change at position t leaked into earlier logits"
    assert not torch.allclose(before[:, t:], after[:, t:]), "the change had no effect at all"


def test_attention_paths_agree_without_dropout():
    torch.manual_seed(0)
    sdpa = GPT(tiny_config(attention="sdpa")).eval()
    explicit = GPT(tiny_config(attention="explicit")).eval()
    explicit.load_state_dict(sdpa.state_dict())
    x = torch.randint(0, 100, (3, 32))
    with torch.no_grad():
        torch.testing.assert_close(sdpa(x), explicit(x), atol=1e-5, rtol=1e-5)
    # shorter than the context too
    with torch.no_grad():
        torch.testing.assert_close(sdpa(x[:, :7]), explicit(x[:, :7]), atol=1e-5, rtol=1e-5)


def test_tied_head_and_residual_init():
    model = GPT(tiny_config(n_layer=8))
    assert model.head.weight is model.token_emb.weight
    std = model.blocks[0].attn.proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.002


def test_learning_rate_schedule():
    class Args:
        learning_rate, min_lr, warmup_iters, max_iters, lr_schedule = 1e-3, 1e-4, 10, 110, "cosine"
    assert learning_rate_at(0, Args) == pytest.approx(1e-4)
    assert learning_rate_at(9, Args) == pytest.approx(1e-3)
    assert learning_rate_at(60, Args) == pytest.approx((1e-3 + 1e-4) / 2)
    assert learning_rate_at(110, Args) == pytest.approx(1e-4)
    Args.lr_schedule = "constant"
    assert learning_rate_at(100, Args) == pytest.approx(1e-3)


def test_gelu_field_chooses_the_form():
    """GPTConfig.gelu: "exact" (the default) is F.gelu, "tanh" F.gelu(approximate="tanh"), GPT-2's."""
    assert GPTConfig().gelu == "exact"
    torch.manual_seed(0)
    exact = GPT(tiny_config()).eval()
    tanh = GPT(tiny_config(gelu="tanh")).eval()
    tanh.load_state_dict(exact.state_dict())
    x = torch.randn(2, 5, 48)
    mlp_exact, mlp_tanh = exact.blocks[0].mlp, tanh.blocks[0].mlp
    with torch.no_grad():
        torch.testing.assert_close(mlp_exact(x), mlp_exact.proj(F.gelu(mlp_exact.fc(x))))
        torch.testing.assert_close(mlp_tanh(x), mlp_exact.proj(F.gelu(mlp_exact.fc(x), approximate="tanh")))
        assert not torch.allclose(mlp_exact(x), mlp_tanh(x), rtol=0, atol=1e-7)
