"""Hugging Face interop (support/hf.py, --export-hf, --init-from), offline: no weights are
downloaded. GPT-2 models here are randomly initialised GPT2LMHeadModels built from a small
GPT2Config and saved locally; logits are compared in float32 within 1e-5.

Needs transformers and safetensors (the `test` extra: pip install -e .[test]); skipped, saying
so, without them.
"""
import json
import os
import re
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="pip install transformers safetensors (the test extra)")
safetensors_torch = pytest.importorskip("safetensors.torch")

from conftest import TINY, run_script, text_dataset  # noqa: E402
from gpt_pretrain import GPT, GPTConfig, UsageError, main  # noqa: E402
from support import hf  # noqa: E402

OFFLINE = {"HF_HUB_OFFLINE": "1"}  # a hub name must fail at once, not wait for a network
TOL = dict(rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A dataset folder (data/prepare.py: byte-level BPE tokenizer with <|endoftext|>)."""
    return text_dataset(tmp_path_factory, 3, 50, "*")


def small_gpt2(path, activation="gelu_new", seed=0, **overrides):
    """A random GPT2LMHeadModel saved to path (config.json + model.safetensors); returns it."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(**{**dict(n_positions=24, n_embd=48, n_layer=2, n_head=3,
                                               vocab_size=71, activation_function=activation,
                                               bos_token_id=0, eos_token_id=0), **overrides})
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm parameters, so a swapped tensor shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    model.save_pretrained(path)
    return model


def our_model(config_fields, state):
    model = GPT(GPTConfig(**config_fields)).eval()
    model.load_state_dict(state)
    return model


def random_tokens(vocab_size, T, seed=1):
    return torch.randint(0, vocab_size, (3, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- import

@pytest.mark.parametrize("activation,gelu", [("gelu_new", "tanh"), ("gelu_pytorch_tanh", "tanh"),
                                             ("gelu", "exact")])
def test_init_from_a_gpt2_folder_gives_transformers_logits(tmp_path, activation, gelu):
    reference = small_gpt2(tmp_path / "gpt2", activation)
    loaded = hf.load_pretrained(str(tmp_path / "gpt2"))
    assert loaded["config"] == dict(context_len=24, vocab_size=71, embed_dim=48, n_head=3, n_layer=2,
                                    ff_dim=192, dropout=0.1, gelu=gelu)
    ours = our_model(loaded["config"], loaded["model"])
    x = random_tokens(71, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x).logits, **TOL)
    assert ours.head.weight is ours.token_emb.weight  # still tied after loading


def test_init_from_runs_on_the_fused_kernels(tmp_path):
    """--kernels ext with GPT-2's tanh GELU (bias_gelu(..., "tanh")) gives transformers' logits too."""
    pytest.importorskip("gpt_kernels", reason="the compiled extension is not built")
    reference = small_gpt2(tmp_path / "gpt2", n_embd=64, n_head=2)  # head size 32: the fused attention's
    loaded = hf.load_pretrained(str(tmp_path / "gpt2"))
    ours = GPT(GPTConfig(**loaded["config"], kernels="ext")).eval()
    ours.load_state_dict(loaded["model"])
    x = random_tokens(71, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x).logits, **TOL)


def test_init_from_takes_n_inner(tmp_path):
    reference = small_gpt2(tmp_path / "gpt2", n_inner=80)
    loaded = hf.load_pretrained(str(tmp_path / "gpt2"))
    assert loaded["config"]["ff_dim"] == 80
    x = random_tokens(71, 24)
    with torch.no_grad():
        torch.testing.assert_close(our_model(loaded["config"], loaded["model"])(x), reference(x).logits, **TOL)


# ----------------------------------------------------------------------------- export

@pytest.mark.parametrize("gelu,activation", [("exact", "gelu"), ("tanh", "gelu_new")])
def test_export_loads_with_auto_classes_and_gives_our_logits(tmp_path, dataset, gelu, activation):
    config = GPTConfig(context_len=20, vocab_size=300, embed_dim=48, n_head=4, n_layer=2, ff_dim=100,
                       dropout=0.0, gelu=gelu)
    torch.manual_seed(0)
    ours = GPT(config).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)
    files = hf.export_hf(ours.state_dict(), asdict(config), str(dataset / "tokenizer.json"), str(tmp_path / "out"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)

    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.config.activation_function == activation and model.config.n_inner == 100
    x = random_tokens(300, 20)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ours(x), **TOL)

    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    from tokenizers import Tokenizer
    run_tokenizer = Tokenizer.from_file(str(dataset / "tokenizer.json"))
    text = "def f7(x):\n    return x * 7\n"
    assert tokenizer(text)["input_ids"] == run_tokenizer.encode(text).ids
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    eot = run_tokenizer.token_to_id("<|endoftext|>")
    assert tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == eot == model.config.eos_token_id == model.config.bos_token_id
    assert model.generation_config.eos_token_id == eot
    with open(tmp_path / "out" / "tokenizer_config.json") as f:  # loads in transformers 4 too
        assert json.load(f)["tokenizer_class"] == "PreTrainedTokenizerFast"

    generate = transformers.pipeline("text-generation", model=str(tmp_path / "out"), device="cpu")
    out = generate("def f", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert out.startswith("def f")


# ----------------------------------------------------------------------------- round trips

def test_export_then_import_is_the_identity(tmp_path, dataset):
    config = GPTConfig(context_len=20, vocab_size=300, embed_dim=48, n_head=4, n_layer=3, ff_dim=192,
                       dropout=0.0, gelu="tanh")
    torch.manual_seed(1)
    state = GPT(config).state_dict()
    hf.export_hf(state, asdict(config), str(dataset / "tokenizer.json"), str(tmp_path / "out"))
    loaded = hf.load_pretrained(str(tmp_path / "out"))
    fields = {k: v for k, v in asdict(config).items() if k in hf.MODEL_FIELDS}
    assert loaded["config"] == fields
    assert sorted(loaded["model"]) == sorted(state)
    for name, tensor in state.items():
        assert torch.equal(loaded["model"][name], tensor), name
    with open(loaded["tokenizer"]) as a, open(dataset / "tokenizer.json") as b:
        assert json.load(a)["model"]["vocab"] == json.load(b)["model"]["vocab"]


def test_import_then_export_is_the_identity(tmp_path):
    small_gpt2(tmp_path / "a")
    loaded = hf.load_pretrained(str(tmp_path / "a"))
    hf.export_hf(loaded["model"], {**loaded["config"], "attention": "sdpa", "kernels": "torch"}, None,
                 str(tmp_path / "b"))
    a = safetensors_torch.load_file(tmp_path / "a" / "model.safetensors")
    b = safetensors_torch.load_file(tmp_path / "b" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    with open(tmp_path / "a" / "config.json") as fa, open(tmp_path / "b" / "config.json") as fb:
        ca, cb = json.load(fa), json.load(fb)
    for key in ("n_positions", "n_embd", "n_layer", "n_head", "n_inner", "vocab_size", "activation_function",
                "layer_norm_epsilon", "resid_pdrop", "tie_word_embeddings", "model_type"):
        assert ca.get(key) == cb.get(key), key


# ----------------------------------------------------------------------------- the command line

def test_cli_init_from_trains_samples_and_exports(tmp_path):
    """--init-from a folder: sample at once, train on a raw .bin, export the run, load it back."""
    small_gpt2(tmp_path / "gpt2")
    data = tmp_path / "tokens.bin"
    np.random.default_rng(0).integers(0, 71, 3000).astype(np.uint16).tofile(data)
    sampled = run_script("--init-from", tmp_path / "gpt2", "--sample", "--prompt", "3 4 5",
                         "--num-tokens", 4, "--device", "cpu", env=OFFLINE)
    ids = sampled.stdout.split()
    assert ids[:3] == ["3", "4", "5"] and len(ids) == 7

    out = tmp_path / "run"
    trained = run_script("--init-from", tmp_path / "gpt2", "--data", data, "--out-dir", out,
                         "--context-len", 16, "--batch-size", 4, "--iters", 2, "--eval-iters", 1,
                         "--dropout", 0.0, "--num-tokens", 2, env=OFFLINE)
    assert "starting from" in trained.stdout and "tanh GELU" in trained.stdout
    checkpoint = torch.load(out / "ckpt.pt", weights_only=True)
    assert checkpoint["config"]["gelu"] == "tanh" and checkpoint["config"]["context_len"] == 16
    assert checkpoint["model"]["pos_emb.weight"].shape == (16, 48)

    (tmp_path / "exported").mkdir()  # an earlier export's tokenizer must not survive this one's
    (tmp_path / "exported" / "tokenizer.json").write_text("{}")
    exported = run_script("--out-dir", out, "--export-hf", tmp_path / "exported", env=OFFLINE)
    assert not (tmp_path / "exported" / "tokenizer.json").exists()
    assert "model.safetensors" in exported.stdout and "no tokenizer" in exported.stdout
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    assert model.config.n_positions == 16 and model.config.activation_function == "gelu_new"
    ours = our_model({k: v for k, v in checkpoint["config"].items()}, checkpoint["model"])
    x = random_tokens(71, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ours(x), **TOL)


def test_cli_export_of_a_trained_run_carries_its_tokenizer(tmp_path, dataset):
    out = tmp_path / "run"
    run_script("--data", dataset, "--out-dir", out, *TINY, "--iters", 2, "--num-tokens", 2)
    run_script("--out-dir", out, "--export-hf", tmp_path / "exported", env=OFFLINE)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "exported")
    assert tokenizer.eos_token == "<|endoftext|>"
    # and back: --init-from the export samples text with that tokenizer
    sampled = run_script("--init-from", tmp_path / "exported", "--sample", "--prompt", "def f",
                         "--num-tokens", 3, env=OFFLINE)
    assert sampled.stdout.startswith("def f")


# ----------------------------------------------------------------------------- bad input

def write_config(folder, **changes):
    with open(folder / "config.json") as f:
        config = json.load(f)
    config.update(changes)
    with open(folder / "config.json", "w") as f:
        json.dump(config, f)


# run as a user runs the script (exit status 2, one line, no traceback); the others call main()
# in this process, which is faster (no new import of transformers) and raises the same message
IN_A_PROCESS = {"hub_name_offline", "not_gpt2", "untied"}


def expect_clear_error(argv, message, in_a_process):
    if in_a_process:
        result = run_script(*argv, check=False, env=OFFLINE)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("error:") and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    else:
        with pytest.raises((UsageError, hf.HFError), match=re.escape(message)):
            main([str(a) for a in argv])


@pytest.mark.parametrize("case,message", [
    ("missing_folder", "no such folder"),
    ("no_config", "not a Hugging Face model folder (no config.json)"),
    ("not_gpt2", "holds a 'llama' model"),
    ("activation", "activation_function 'relu'"),
    ("eps", "layer_norm_epsilon"),
    ("no_weights", "cannot load the weights"),
    ("hub_name_offline", "download the model folder"),
    ("shape_flag", "the model has another shape: embed_dim=64"),
    ("longer_context", "the model has 24 positions"),
    ("with_resume", "use one of them"),
    ("vocab_mismatch", "is not the model's"),
])
def test_init_from_bad_input_gives_a_clear_error(tmp_path, dataset, case, message):
    folder = tmp_path / "gpt2"
    small_gpt2(folder)
    source, extra = folder, ["--sample", "--num-tokens", 1]
    if case == "missing_folder":
        source = tmp_path / "nothing_here"
    elif case == "no_config":
        os.remove(folder / "config.json")
    elif case == "not_gpt2":
        write_config(folder, model_type="llama")
    elif case == "activation":
        write_config(folder, activation_function="relu")
    elif case == "eps":
        write_config(folder, layer_norm_epsilon=1e-6)
    elif case == "no_weights":
        os.remove(folder / "model.safetensors")
    elif case == "hub_name_offline":
        source = "gpt2-medium"
    elif case == "shape_flag":
        extra += ["--embed-dim", 64]
    elif case == "longer_context":
        extra += ["--context-len", 64]
    elif case == "with_resume":
        extra = ["--resume"]
    elif case == "vocab_mismatch":  # the dataset has its own tokenizer, not the model's
        small_gpt2(folder, vocab_size=400)  # room for the dataset's 300 ids
        from tokenizers import Tokenizer
        model_tokenizer = Tokenizer.from_file(str(dataset / "tokenizer.json"))
        model_tokenizer.add_tokens(["an_extra_token"])
        model_tokenizer.save(str(folder / "tokenizer.json"))
        extra = ["--data", dataset, "--out-dir", tmp_path / "run", "--iters", 1]
    expect_clear_error(["--init-from", source, *extra], message, in_a_process=case in IN_A_PROCESS)


@pytest.mark.parametrize("case,message", [
    ("no_checkpoint", "no checkpoint"),
    ("unknown_option", "options GPT-2 cannot express: rope='yes'"),
    ("untied", "not tied to the token embedding"),
    ("extra_tensor", "no place in GPT-2 for blocks.0.attn.rotary"),
    ("target_is_a_file", "is a file"),
    ("tokenizer_too_large", "more than the model's vocab_size"),
])
def test_export_bad_input_gives_a_clear_error(tmp_path, dataset, case, message):
    config = GPTConfig(context_len=16, vocab_size=300, embed_dim=32, n_head=2, n_layer=1, ff_dim=64)
    torch.manual_seed(0)
    state = GPT(config).state_dict()
    out = tmp_path / "run"
    os.makedirs(out)
    checkpoint = {"model": state, "config": asdict(config), "train_args": {}, "tokenizer": None}
    target = tmp_path / "exported"
    if case == "no_checkpoint":
        checkpoint = None
    elif case == "unknown_option":
        checkpoint["config"]["rope"] = "yes"
    elif case == "untied":
        state["head.weight"] = state["token_emb.weight"].clone() + 1
    elif case == "extra_tensor":
        state["blocks.0.attn.rotary"] = torch.zeros(3)
    elif case == "target_is_a_file":
        target.write_text("a file")
    elif case == "tokenizer_too_large":
        checkpoint["config"]["vocab_size"] = 100
        checkpoint["model"] = GPT(GPTConfig(**{**asdict(config), "vocab_size": 100})).state_dict()
        checkpoint["tokenizer"] = str(dataset / "tokenizer.json")
    if checkpoint is not None:
        from gpt_pretrain import TrainConfig
        checkpoint["train_args"] = asdict(TrainConfig())
        torch.save(checkpoint, out / "ckpt.pt")
    expect_clear_error(["--out-dir", out, "--export-hf", target], message, in_a_process=case in IN_A_PROCESS)


def test_core_install_needs_no_transformers(tmp_path, monkeypatch):
    """The training script imports without transformers; --init-from then says what to install."""
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(hf.HFError, match="pip install transformers safetensors"):
        hf.load_pretrained(str(tmp_path))
    script = ("import sys; sys.modules['transformers'] = None; sys.modules['safetensors'] = None; "
              "import gpt_pretrain, support.hf; print('ok')")
    import subprocess
    from conftest import ROOT
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
