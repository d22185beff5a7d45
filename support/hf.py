"""Hugging Face interop for gpt_pretrain.py: export a run as a transformers GPT-2 folder
(--export-hf DIR), and start from a GPT-2 folder or hub name (--init-from).

Our GPT is GPT-2's architecture (pre-LayerNorm with eps 1e-5, learned positions, biases,
1/sqrt(head size) attention scale, the head tied to the token embedding) with either GELU:
the exact one ("gelu" in transformers' config) or GPT-2's tanh approximation ("gelu_new").
So the conversion only renames tensors and transposes the linear layers, because GPT-2's
Conv1D stores its weight as (in, out) where nn.Linear stores (out, in):

    ours (GPT)                          transformers (GPT2LMHeadModel)
    token_emb.weight (V, C)             transformer.wte.weight (lm_head.weight is tied to it)
    pos_emb.weight (T, C)               transformer.wpe.weight
    blocks.{i}.ln1.{weight,bias}        transformer.h.{i}.ln_1.{weight,bias}
    blocks.{i}.attn.qkv.weight (3C, C)  transformer.h.{i}.attn.c_attn.weight (C, 3C), transposed
    blocks.{i}.attn.proj.weight (C, C)  transformer.h.{i}.attn.c_proj.weight, transposed
    blocks.{i}.ln2.{weight,bias}        transformer.h.{i}.ln_2.{weight,bias}
    blocks.{i}.mlp.fc.weight (F, C)     transformer.h.{i}.mlp.c_fc.weight (C, F), transposed
    blocks.{i}.mlp.proj.weight (C, F)   transformer.h.{i}.mlp.c_proj.weight (F, C), transposed
    ln_f.{weight,bias}                  transformer.ln_f.{weight,bias}
    (biases keep their names and shapes; q, k, v sit in the same order in both qkv layouts)

transformers and safetensors are needed only here (pip install transformers safetensors); the
training script imports this module only for --export-hf and --init-from.
"""
import glob
import json
import os
import re

import torch

EOT = "<|endoftext|>"  # data/prepare.py's end-of-text token; GPT-2's bos, eos and unk
# our GPTConfig.gelu -> transformers' activation_function, and back (the tanh forms are one
# formula, written three ways in transformers)
ACTIVATION_OF = {"exact": "gelu", "tanh": "gelu_new"}
GELU_OF = {"gelu": "exact", "gelu_python": "exact",
           "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}
# GPTConfig fields the export reads; the others choose how the same function is computed
MODEL_FIELDS = ("context_len", "vocab_size", "embed_dim", "n_head", "n_layer", "ff_dim",
                "dropout", "gelu")
RUNTIME_FIELDS = ("attention", "kernels")
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which our GPT uses


class HFError(Exception):
    """Input the conversion cannot take: gpt_pretrain.py prints the message and exits with 2."""


def _require_transformers(flag):
    try:
        import safetensors  # noqa: F401
        import transformers
    except ImportError as e:
        raise HFError(f"{flag} needs transformers and safetensors ({e}): "
                      "pip install transformers safetensors") from None
    transformers.logging.set_verbosity_error()  # its load reports are checked here instead
    transformers.logging.disable_progress_bar()
    return transformers


def _layer_names(i):
    """(ours, transformers', transposed) for the tensors of block i."""
    o, h = f"blocks.{i}.", f"transformer.h.{i}."
    return [(o + "ln1.weight", h + "ln_1.weight", False), (o + "ln1.bias", h + "ln_1.bias", False),
            (o + "attn.qkv.weight", h + "attn.c_attn.weight", True),
            (o + "attn.qkv.bias", h + "attn.c_attn.bias", False),
            (o + "attn.proj.weight", h + "attn.c_proj.weight", True),
            (o + "attn.proj.bias", h + "attn.c_proj.bias", False),
            (o + "ln2.weight", h + "ln_2.weight", False), (o + "ln2.bias", h + "ln_2.bias", False),
            (o + "mlp.fc.weight", h + "mlp.c_fc.weight", True),
            (o + "mlp.fc.bias", h + "mlp.c_fc.bias", False),
            (o + "mlp.proj.weight", h + "mlp.c_proj.weight", True),
            (o + "mlp.proj.bias", h + "mlp.c_proj.bias", False)]


def _names(n_layer):
    names = [("token_emb.weight", "transformer.wte.weight", False),
             ("pos_emb.weight", "transformer.wpe.weight", False)]
    for i in range(n_layer):
        names += _layer_names(i)
    return names + [("ln_f.weight", "transformer.ln_f.weight", False),
                    ("ln_f.bias", "transformer.ln_f.bias", False)]


# ----------------------------------------------------------------------------- export

def check_exportable(config, state):
    """Raise HFError for a run GPT-2 cannot express: an option or a tensor it has no place for."""
    unknown = sorted(set(config) - set(MODEL_FIELDS) - set(RUNTIME_FIELDS))
    if unknown:
        raise HFError(f"--export-hf: the run has options GPT-2 cannot express: "
                      f"{', '.join(f'{k}={config[k]!r}' for k in unknown)}.")
    if config["gelu"] not in ACTIVATION_OF:
        raise HFError(f"--export-hf: gelu={config['gelu']!r} has no GPT-2 equivalent "
                      f"(it takes {' or '.join(ACTIVATION_OF)}).")
    if config["embed_dim"] % config["n_head"]:
        raise HFError(f"--export-hf: embed_dim {config['embed_dim']} is not divisible by n_head "
                      f"{config['n_head']}: GPT-2 gives each head embed_dim / n_head channels.")
    expected = {ours for ours, _, _ in _names(config["n_layer"])} | {"head.weight"}
    extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
    if extra or missing:
        raise HFError("--export-hf: the checkpoint's tensors are not GPT-2's: "
                      + (f"no place in GPT-2 for {', '.join(extra[:5])}" if extra else "")
                      + ("; " if extra and missing else "")
                      + (f"missing {', '.join(missing[:5])}" if missing else "") + ".")
    if not torch.equal(state["head.weight"], state["token_emb.weight"]):
        raise HFError("--export-hf: the output head is not tied to the token embedding, as GPT-2's is.")


def gpt2_config(config, eot_id=None):
    """transformers.GPT2Config of our config (a dict of GPTConfig's fields)."""
    from transformers import GPT2Config
    C = config["embed_dim"]
    return GPT2Config(
        vocab_size=config["vocab_size"], n_positions=config["context_len"], n_embd=C,
        n_layer=config["n_layer"], n_head=config["n_head"],
        n_inner=None if config["ff_dim"] == 4 * C else config["ff_dim"],
        activation_function=ACTIVATION_OF[config["gelu"]], layer_norm_epsilon=LAYER_NORM_EPS,
        resid_pdrop=config["dropout"], embd_pdrop=config["dropout"], attn_pdrop=config["dropout"],
        scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, tie_word_embeddings=True,
        bos_token_id=eot_id, eos_token_id=eot_id, architectures=["GPT2LMHeadModel"])


def to_hf_state_dict(state, n_layer):
    """Our state dict -> GPT2LMHeadModel's (without lm_head.weight, the tied copy of wte)."""
    return {hf: (state[ours].t() if transposed else state[ours]).contiguous()
            for ours, hf, transposed in _names(n_layer)}


def from_hf_state_dict(hf_state, n_layer):
    """GPT2LMHeadModel's state dict -> ours (head.weight tied to token_emb.weight)."""
    state = {ours: (hf_state[hf].t() if transposed else hf_state[hf]).float().contiguous()
             for ours, hf, transposed in _names(n_layer)}
    state["head.weight"] = state["token_emb.weight"]
    return state


def _load_run_tokenizer(tokenizer_path, vocab_size):
    """The run's tokenizers.Tokenizer, checked against the model's vocabulary, or None."""
    if not tokenizer_path:
        return None
    if not os.path.isfile(tokenizer_path):
        raise HFError(f"--export-hf: the run's tokenizer {tokenizer_path} no longer exists; put it "
                      "back (it is the dataset's tokenizer.json) to export a loadable tokenizer.")
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(tokenizer_path)
    if tokenizer.get_vocab_size() > vocab_size:
        raise HFError(f"--export-hf: the tokenizer {tokenizer_path} has {tokenizer.get_vocab_size()} "
                      f"tokens, more than the model's vocab_size {vocab_size}: they are not one run's.")
    return tokenizer


def _name_tokenizer_class(path):
    """transformers 5 writes its own class name (TokenizersBackend), which transformers 4 does not
    know; PreTrainedTokenizerFast, the same tokenizer.json wrapper, loads in both."""
    with open(path) as f:
        tokenizer_config = json.load(f)
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(path, "w") as f:
        json.dump(tokenizer_config, f, indent=2)


# what transformers reads from a model folder: an earlier export's copies must not survive
# (a stale tokenizer.json would load with the new model)
PREVIOUS_EXPORT = ("config.json", "generation_config.json", "model.safetensors*", "model-*.safetensors",
                   "pytorch_model*.bin*", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                   "chat_template.jinja")


def export_hf(state, config, tokenizer_path, out_dir):
    """Write out_dir: config.json, generation_config.json, model.safetensors and, when the run has
    one, its tokenizer for transformers (tokenizer.json + tokenizer_config.json, <|endoftext|> as
    bos, eos and unk, as GPT-2's). state: our state dict; config: GPTConfig's fields as a dict.
    Returns the names of the files written."""
    transformers = _require_transformers("--export-hf")
    check_exportable(config, state)
    tokenizer = _load_run_tokenizer(tokenizer_path, config["vocab_size"])
    eot_id = tokenizer.token_to_id(EOT) if tokenizer else None
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise HFError(f"--export-hf {out_dir} is a file: give a folder to write.")
    try:
        os.makedirs(out_dir, exist_ok=True)
        for pattern in PREVIOUS_EXPORT:
            for path in glob.glob(os.path.join(glob.escape(out_dir), pattern)):
                os.remove(path)
    except OSError as e:
        raise HFError(f"--export-hf: cannot write to {out_dir}: {e.strerror}.") from None

    model = transformers.GPT2LMHeadModel(gpt2_config(config, eot_id))
    result = model.load_state_dict(to_hf_state_dict({k: v.float() for k, v in state.items()},
                                                    config["n_layer"]), strict=False)
    # every tensor is given (check_exportable): only lm_head.weight, tied to wte, and the
    # attention-mask buffers of older transformers versions are left to the model
    left = [k for k in result.missing_keys if k != "lm_head.weight" and not k.endswith(("attn.bias", "attn.masked_bias"))]
    if left or result.unexpected_keys:
        raise HFError(f"--export-hf: this transformers' GPT2LMHeadModel names its tensors otherwise: "
                      f"{', '.join((left + result.unexpected_keys)[:5])}.")
    model.tie_weights()  # lm_head.weight = wte.weight
    model.generation_config.bos_token_id = model.generation_config.eos_token_id = eot_id
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
        if tokenizer is not None:
            special = dict(bos_token=EOT, eos_token=EOT, unk_token=EOT) if eot_id is not None else {}
            wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer,
                                                           model_max_length=config["context_len"], **special)
            wrapped.save_pretrained(out_dir)
            _name_tokenizer_class(os.path.join(out_dir, "tokenizer_config.json"))
    except OSError as e:
        raise HFError(f"--export-hf: cannot write {out_dir}: {e.strerror or e}.") from None
    return sorted(os.listdir(out_dir))


# ----------------------------------------------------------------------------- import

def _is_hub_name(source):
    """Whether source reads as a hub name ("gpt2", "openai-community/gpt2") rather than a path."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", source) is not None


def resolve_folder(source):
    """The local folder of --init-from SOURCE: the folder itself, or a hub name downloaded into
    the Hugging Face cache (config, weights and tokenizer files only)."""
    if os.path.isdir(os.path.expanduser(source)):
        return os.path.expanduser(source)
    if os.path.exists(source):
        raise HFError(f"--init-from {source} is a file: give a Hugging Face model folder (with "
                      "config.json and model.safetensors) or a hub name such as gpt2.")
    if not _is_hub_name(source):
        raise HFError(f"--init-from {source}: no such folder. Give a Hugging Face model folder "
                      "(with config.json and model.safetensors) or a hub name such as gpt2.")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.txt"])
    except Exception as e:  # offline, unknown name, no access: all say the same to the user
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise HFError(
            f"--init-from {source}: it is not a folder here, and downloading it from the Hugging "
            f"Face hub failed ({reason}). Without network, download the model folder where there "
            f"is network (e.g. `hf download {source} --local-dir {source.split('/')[-1]}`, or "
            f"save_pretrained from transformers), copy it here, and pass its path: "
            f"--init-from PATH.") from None


def config_from_gpt2(hf):
    """Our GPTConfig fields (a dict) from a GPT-2 config.json (a dict), or HFError for a model
    our GPT cannot represent."""
    where = hf.get("_source", "the folder")
    if hf.get("model_type") != "gpt2":
        raise HFError(f"--init-from: {where} holds a {hf.get('model_type')!r} model; only GPT-2 "
                      "(model_type 'gpt2', GPT2LMHeadModel) has our GPT's architecture.")
    lacking = [k for k in ("n_positions", "vocab_size", "n_embd", "n_head", "n_layer") if not hf.get(k)]
    if lacking:
        raise HFError(f"--init-from: the config.json of {where} lacks {', '.join(lacking)}.")
    act = hf.get("activation_function", "gelu_new")
    problems = []
    if act not in GELU_OF:
        problems.append(f"activation_function {act!r} (ours: {' or '.join(sorted(GELU_OF))})")
    if abs(hf.get("layer_norm_epsilon", LAYER_NORM_EPS) - LAYER_NORM_EPS) > 1e-12:
        problems.append(f"layer_norm_epsilon {hf['layer_norm_epsilon']} (ours: {LAYER_NORM_EPS})")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        problems.append("an attention scale other than 1/sqrt(head size)")
    if hf.get("add_cross_attention", False):
        problems.append("cross-attention")
    if not hf.get("tie_word_embeddings", True):
        problems.append("an output head not tied to the token embedding")
    if hf["n_embd"] % hf["n_head"]:
        problems.append(f"n_embd {hf['n_embd']} not divisible by n_head {hf['n_head']}")
    if problems:
        raise HFError(f"--init-from: {where} is a GPT-2 variant our GPT cannot represent: "
                      f"{'; '.join(problems)}.")
    return dict(context_len=hf["n_positions"], vocab_size=hf["vocab_size"], embed_dim=hf["n_embd"],
                n_head=hf["n_head"], n_layer=hf["n_layer"], ff_dim=hf.get("n_inner") or 4 * hf["n_embd"],
                dropout=hf.get("resid_pdrop", 0.1), gelu=GELU_OF[act])


def load_pretrained(source):
    """--init-from SOURCE as a checkpoint-like dict: {"model": our state dict (float32),
    "config": our GPTConfig fields, "tokenizer": its tokenizer.json or None, "source": folder}."""
    transformers = _require_transformers("--init-from")
    folder = resolve_folder(source)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise HFError(f"--init-from {source}: {folder} is not a Hugging Face model folder (no "
                      "config.json); save one with transformers' save_pretrained or --export-hf.")
    try:
        with open(config_path) as f:
            hf = json.load(f)
    except (OSError, ValueError) as e:
        raise HFError(f"--init-from {source}: cannot read {config_path}: {e}") from None
    if not isinstance(hf, dict):
        raise HFError(f"--init-from {source}: {config_path} is not a JSON object.")
    config = config_from_gpt2({**hf, "_source": folder})
    try:
        model, info = transformers.GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise HFError(f"--init-from {source}: cannot load the weights in {folder}: "
                      f"{' '.join(str(e).split())[:400]}") from None
    # from_pretrained fills tensors the files lack with random values: refuse that
    missing = [k for k in info.get("missing_keys", []) if k != "lm_head.weight"]
    bad = missing + [str(k) for k in info.get("mismatched_keys", [])]
    if bad:
        raise HFError(f"--init-from {source}: the weights in {folder} do not fit its config.json: "
                      f"missing or misshapen {', '.join(bad[:5])}.")
    hf_state = model.state_dict()
    if not torch.equal(hf_state["lm_head.weight"], hf_state["transformer.wte.weight"]):
        raise HFError(f"--init-from {source}: its output head differs from its token embedding; "
                      "our GPT ties them, as GPT-2 does.")
    tokenizer = os.path.join(folder, "tokenizer.json")
    tokenizer = tokenizer if os.path.isfile(tokenizer) else None
    if tokenizer:
        from tokenizers import Tokenizer
        size = Tokenizer.from_file(tokenizer).get_vocab_size()
        if size > config["vocab_size"]:
            raise HFError(f"--init-from {source}: its tokenizer has {size} tokens, more than the "
                          f"model's vocab_size {config['vocab_size']}.")
    return {"model": from_hf_state_dict(hf_state, config["n_layer"]), "config": config,
            "tokenizer": os.path.abspath(tokenizer) if tokenizer else None,
            "source": os.path.abspath(folder)}


def same_vocabulary(tokenizer_a, tokenizer_b):
    """Whether two tokenizer.json files map the same strings to the same ids."""
    from tokenizers import Tokenizer
    return Tokenizer.from_file(tokenizer_a).get_vocab() == Tokenizer.from_file(tokenizer_b).get_vocab()
