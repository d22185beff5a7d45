"""Sampling (support/sampling.py): the KV cache gives the uncached loop's tokens, seeds reproduce,
top-p keeps the nucleus, and the sampling flags refuse bad values."""
import pytest
import torch

from conftest import TINY, run_script
from gpt_pretrain import GPT, GPTConfig
from support.sampling import KVCache, SamplingError, generate, next_token


def random_model(attention="sdpa", seed=0, **overrides):
    torch.manual_seed(seed)
    config = GPTConfig(**{**dict(context_len=32, vocab_size=100, embed_dim=48, n_head=4, n_layer=2,
                                 ff_dim=192, dropout=0.0, attention=attention), **overrides})
    model = GPT(config).eval()
    with torch.no_grad():  # larger weights than at init: peaked, more varied predictions
        for p in model.parameters():
            p.mul_(4)
    return model


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_cached_logits_match_the_full_forward(attention):
    model = random_model(attention)
    idx = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.config, 2, idx.device, torch.float32)
        parts = [model(idx[:, :10], cache), model(idx[:, 10:15], cache)]  # a prompt, then 5 at once
        parts += [model(idx[:, t:t + 1], cache) for t in range(15, 32)]  # then one at a time
    assert cache.length == 32
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
@pytest.mark.parametrize("greedy", [dict(temperature=0.0), dict(temperature=0.8, top_k=1)])
@pytest.mark.parametrize("prompt_len", [3, 40])  # 3 + 60 tokens run past the context of 32; 40 is past it at once
def test_greedy_decoding_gives_the_same_tokens_with_and_without_the_cache(attention, greedy, prompt_len):
    for seed in range(3):
        model = random_model(attention, seed)
        prompt = torch.randint(0, 100, (1, prompt_len), generator=torch.Generator().manual_seed(seed))
        cached = generate(model, prompt, 60, kv_cache=True, **greedy)
        uncached = generate(model, prompt, 60, kv_cache=False, **greedy)
        assert cached.shape == (1, prompt_len + 60)
        assert torch.equal(cached, uncached), f"seed {seed}: the cache changed the tokens"
        assert len(set(cached[0, prompt_len:].tolist())) > 3  # not one token repeated: a real check


def test_a_seeded_sample_is_reproducible():
    model = random_model()
    prompt = torch.tensor([[1, 2, 3]])

    def sample(seed, **kwargs):
        return generate(model, prompt, 40, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(seed),
                        **kwargs).tolist()
    assert sample(5) == sample(5)
    assert sample(5) != sample(6)
    assert sample(5, top_p=0.9) == sample(5, top_p=0.9)


def test_top_p_samples_from_the_nucleus_only():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    generator = torch.Generator().manual_seed(0)
    drawn = {next_token(logits, 1.0, 0, 0.7, generator).item() for _ in range(300)}
    assert drawn == {0, 1}  # 0.5 + 0.3 reach 0.7; 0.15 and 0.05 are outside
    assert {next_token(logits, 1.0, 0, 0.01, generator).item() for _ in range(50)} == {0}
    assert {next_token(logits, 1.0, 0, 1.0, generator).item() for _ in range(500)} == {0, 1, 2, 3}


def test_a_non_finite_model_raises_a_sampling_error():
    model = random_model()
    with torch.no_grad():
        model.ln_f.bias.fill_(float("nan"))
    with pytest.raises(SamplingError, match="not finite"):
        generate(model, torch.tensor([[1]]), 5)


def test_cli_sample_with_a_seed_is_reproducible(token_file, tmp_path):
    out = tmp_path / "run"
    run_script("--data", token_file, "--vocab-size", 64, "--out-dir", out, *TINY, "--iters", 2, "--num-tokens", 1)
    first, again, other = (run_script("--sample", "--out-dir", out, "--prompt", "1 2 3", "--num-tokens", 30,
                                      "--seed", seed, "--top-p", 0.95).stdout for seed in (7, 7, 8))
    assert first == again and first != other
    assert first.split()[:3] == ["1", "2", "3"] and len(first.split()) == 33


@pytest.mark.parametrize("flags, message", [
    (["--top-p", 0], "--top-p in (0, 1]"),
    (["--top-p", 1.5], "--top-p in (0, 1]"),
    (["--temperature", -1], "--temperature"),
    (["--top-k", -2], "--top-k"),
    (["--num-tokens", -5], "--num-tokens"),
    (["--prompt", "def"], "is not token ids"),
    (["--skip-spikes", 0], "--skip-spikes 0"),
    (["--max-nonfinite", 0], "--max-nonfinite 0"),
    (["--peak-flops", -1], "--peak-flops -1"),
    (["--grad-clip", -1], "--grad-clip -1"),
])
def test_bad_sampling_and_guard_flags_give_a_clear_error(token_file, tmp_path, flags, message):
    result = run_script("--data", token_file, "--vocab-size", 64, "--out-dir", tmp_path / "run", *TINY,
                        "--iters", 2, "--num-tokens", 3, *flags, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]  # (the prompt is checked after training, at the sample)
    assert "Traceback" not in result.stderr and last_line.startswith("error:"), result.stderr[-2000:]
    assert message in last_line
