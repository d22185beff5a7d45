"""The checks every op of gpt_kernels gets, written once; tests/test_<op>.py calls them with its
own inputs and keeps only what is particular to its op.

- where a test runs: DEVICES, and cuda_cases() for (device, ...) tuples; a "cuda" case carries
  the `cuda` marker, which tests/conftest.py turns into a skip, with the reason, where there is
  no GPU or no CUDA kernels (the one rule for every file: a test that needs CUDA and takes no
  device argument is decorated @pytest.mark.cuda)
- the op's registration: check_opcheck (torch.library.opcheck), check_compile_matches (one
  fullgraph torch.compile agrees with eager, forward and gradients)
- its gradient: check_gradcheck (torch.autograd.gradcheck in float64), check_no_double_backward
  (gradients of gradients raise a clear error)
- its devices: cpu_and_cuda_outputs / check_cpu_and_cuda_agree (the same inputs on both)
- bad input: check_errors (each case raises RuntimeError with its message)
- what it states it takes: check_takes_exactly (its module's DTYPES, which gpt_kernels.unsupported()
  answers from)

No gpt_kernels import here: the op files import it (tests/conftest.py finds the files that need
the extension by the text "import gpt_kernels").
"""
import pytest
import torch

CUDA = pytest.mark.cuda  # skipped, saying why, without a GPU or CUDA kernels (conftest.py)
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def cuda_cases(cases):
    """The parameter list of `cases` (tuples whose first item is the device), each "cuda" case
    marked `cuda`."""
    return [pytest.param(*case, marks=CUDA) if case[0] == "cuda" else case for case in cases]


def _tensors(x):
    return [t for t in (x if isinstance(x, (tuple, list)) else (x,)) if isinstance(t, torch.Tensor)]


def check_opcheck(*calls):
    """torch.library.opcheck on each call: (op, args) or (op, args, kwargs). Tensors that require
    grad make it test the autograd registration too; for an op without a double backward (the
    backward ops) pass detached inputs."""
    for call in calls:
        op, args, kwargs = (*call, None) if len(call) == 2 else call
        torch.library.opcheck(op, args, kwargs)


def check_compile_matches(fn, *args, reference=None, seed=None, rtol=None, atol=None,
                          grad_rtol=None, grad_atol=None):
    """fn compiled with torch.compile(fullgraph=True) gives what `reference` (fn itself by
    default) gives in eager mode: its output, and the gradients of the output's sum with respect
    to the args that require grad (under the given tolerances; None: torch.testing's defaults
    for the dtype). seed: torch.manual_seed(seed) before each call (ops that draw a mask: the
    compiled graph must draw the same one). Returns (the compiled fn, its output, the eager output)."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    if seed is not None:
        torch.manual_seed(seed)
    out = compiled(*args)
    if seed is not None:
        torch.manual_seed(seed)
    expected = (reference or fn)(*args)
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if inputs:
        grads = torch.autograd.grad(out.sum(), inputs)
        grads_eager = torch.autograd.grad(expected.sum(), inputs)
        for a, b in zip(grads, grads_eager):
            torch.testing.assert_close(a, b, rtol=grad_rtol, atol=grad_atol)
    return compiled, out, expected


def check_gradcheck(fn, *inputs, **kwargs):
    """torch.autograd.gradcheck of fn at inputs, which must be float64 and require grad (the
    numerical gradient needs float64's precision)."""
    for t in inputs:
        assert t.dtype == torch.float64 and t.requires_grad, "gradcheck takes float64 inputs that require grad"
    assert torch.autograd.gradcheck(fn, inputs, **kwargs)


def cpu_and_cuda_outputs(fn, *args, cuda_dtype=None):
    """(fn's outputs on the CPU, on CUDA) for the same inputs: the CUDA inputs are the CPU
    tensors of args moved there (converted to cuda_dtype when given), the CPU inputs those
    values brought back (so both see the same rounded numbers). Other args pass unchanged."""
    cuda_args = [a.to("cuda", cuda_dtype or a.dtype) if isinstance(a, torch.Tensor) else a for a in args]
    cpu_args = [c.to("cpu", a.dtype) if isinstance(a, torch.Tensor) else a for a, c in zip(args, cuda_args)]
    return fn(*cpu_args), fn(*cuda_args)


def check_cpu_and_cuda_agree(fn, *args, rtol, atol, cuda_dtype=None):
    """fn's tensor outputs agree on the CPU and on CUDA for the same inputs (cpu_and_cuda_outputs);
    rtol and atol: a number, or one per tensor output."""
    cpu, cuda = cpu_and_cuda_outputs(fn, *args, cuda_dtype=cuda_dtype)
    cpu, cuda = _tensors(cpu), _tensors(cuda)
    assert len(cpu) == len(cuda)
    rtols = rtol if isinstance(rtol, (tuple, list)) else [rtol] * len(cpu)
    atols = atol if isinstance(atol, (tuple, list)) else [atol] * len(cpu)
    for i, (a, b) in enumerate(zip(cuda, cpu)):
        torch.testing.assert_close(a.cpu(), b, rtol=rtols[i], atol=atols[i], msg=lambda m: f"output {i}: {m}")


def check_errors(*cases):
    """Each case (match, fn, *args) raises RuntimeError whose message matches the regex `match`."""
    for match, fn, *args in cases:
        with pytest.raises(RuntimeError, match=match):
            fn(*args)


FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_takes_exactly(dtypes, run):
    """The op takes the floating dtypes `dtypes` (its module's DTYPES[device], what
    gpt_kernels.unsupported() answers from) and refuses the others with a RuntimeError:
    run(dtype) calls it on inputs of that dtype."""
    for dtype in FLOATING:
        if dtype in dtypes:
            run(dtype)
        else:
            with pytest.raises(RuntimeError):
                run(dtype)


def check_no_double_backward(op, fn, *inputs):
    """Gradients of gradients of fn (create_graph=True, then a second backward) raise the clear
    NotImplementedError of gpt_kernels/_registration.py, naming `op`."""
    out = fn(*inputs)
    upstream = torch.randn_like(out, requires_grad=True)  # so the backward op is recorded
    grads = torch.autograd.grad(out, inputs, upstream, create_graph=True)
    with pytest.raises(NotImplementedError, match=f"gpt_kernels.{op}: double backward .* is not supported"):
        sum(g.sum() for g in grads).backward()
