"""`pip install -e .` succeeds wherever PyTorch does: with the C++ compiler made to fail
(CXX=false), a copy of the project installs into a new virtualenv, says why the kernels were
not built, trains with --kernels torch, and --kernels ext stops at start with that reason (exit
2). GPT_KERNELS_REQUIRED=1 turns the failed build into a failed install, and the test suite
refuses to run without the extension unless GPT_KERNELS_OPTIONAL=1 says so.

The new virtualenv sees this environment's packages (torch, setuptools) through a .pth file, so
nothing is downloaded: pip runs with --no-index --no-deps --no-build-isolation.
"""
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from conftest import ROOT, TINY

_IGNORE_ANYWHERE = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.so", "*.egg-info",
                                          "_build_error.txt")


def IGNORE(folder, names):
    """What the copy leaves out: build outputs anywhere, and the checkout's own virtualenvs,
    builds, runs and prepared corpus at the top."""
    ignored = set(_IGNORE_ANYWHERE(folder, names))
    if os.path.samefile(folder, ROOT):
        ignored |= {n for n in names if n in (".git", ".venv", "venv", "build", "runs") or n.startswith("out")}
    if os.path.basename(folder) == "data":
        ignored |= {"stdlib"} & set(names)
    return ignored


@pytest.fixture(scope="module")
def failed_install(tmp_path_factory):
    """(python of the new virtualenv, the project copy, pip's output) after an install with
    CXX=false."""
    tmp = tmp_path_factory.mktemp("install")
    project = tmp / "project"
    shutil.copytree(ROOT, project, ignore=IGNORE)
    (project / "gpt_kernels" / "_C.so").write_bytes(b"a library from an earlier build")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "parent_env.pth"), "w") as f:
        f.write("\n".join(sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})) + "\n")
    pip = [python, "-m", "pip", "install", "-v", "--no-index", "--no-deps", "--no-build-isolation", "-e", str(project)]
    env = {**os.environ, "CXX": "false"}
    env.pop("GPT_KERNELS_REQUIRED", None)
    install = subprocess.run(pip, env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, f"the install failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}"
    return python, project, install.stdout + install.stderr, pip


@pytest.mark.slow
def test_install_without_a_compiler_succeeds_and_says_why(failed_install):
    python, project, output, _ = failed_install
    lines = [line.strip() for line in output.splitlines() if "could not be built" in line]
    assert lines, f"no line says why the kernels were not built:\n{output[-3000:]}"
    assert "C++ compiler: false" in lines[0] and "--kernels torch works" in lines[0]
    assert not list((project / "gpt_kernels").glob("_C*.so")), "an older library must not stay"
    assert (project / "gpt_kernels" / "_build_error.txt").exists()


@pytest.mark.slow
def test_the_pytorch_path_trains_and_ext_stops_with_the_reason(failed_install, tmp_path):
    python, project, _, _ = failed_install
    data = tmp_path / "tokens.bin"
    np.random.default_rng(0).integers(0, 64, 4000).astype(np.uint16).tofile(data)
    common = [python, str(project / "gpt_pretrain.py"), "--data", str(data), "--vocab-size", "64",
              "--iters", "3", "--device", "cpu", *TINY]
    torch_run = subprocess.run([*common, "--out-dir", str(tmp_path / "torch")], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300)
    assert torch_run.returncode == 0, torch_run.stderr[-3000:]
    assert (tmp_path / "torch" / "ckpt.pt").exists()
    ext_run = subprocess.run([*common, "--out-dir", str(tmp_path / "ext"), "--kernels", "ext",
                              "--embed-dim", "64"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert ext_run.returncode == 2, ext_run.stderr[-3000:]
    assert "gpt_kernels was not built" in ext_run.stderr and "C++ compiler: false" in ext_run.stderr
    assert "Traceback" not in ext_run.stderr


@pytest.mark.slow
def test_required_build_fails_the_install(failed_install):
    _, _, _, pip = failed_install
    env = {**os.environ, "CXX": "false", "GPT_KERNELS_REQUIRED": "1"}
    install = subprocess.run(pip, env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode != 0, "GPT_KERNELS_REQUIRED=1 must make a failed build fail the install"


@pytest.mark.slow
def test_the_suite_refuses_to_run_without_the_extension_unless_opted_out(failed_install):
    python, project, _, _ = failed_install
    collect = [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    env = {k: v for k, v in os.environ.items() if k != "GPT_KERNELS_OPTIONAL"}
    refused = subprocess.run(collect, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "gpt_kernels, the compiled extension, does not import" in refused.stdout + refused.stderr
    assert "GPT_KERNELS_OPTIONAL=1" in refused.stdout + refused.stderr
    opted_out = subprocess.run(collect, cwd=project, env={**env, "GPT_KERNELS_OPTIONAL": "1"},
                               capture_output=True, text=True, timeout=300)
    assert opted_out.returncode == 0, opted_out.stdout[-3000:] + opted_out.stderr[-3000:]
    collected = opted_out.stdout
    assert "tests/test_model.py" in collected and "tests/test_cross_entropy.py" not in collected
