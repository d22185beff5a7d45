"""PEP 517 backend for `pip install -e .`: setuptools, made to see the environment's torch.

pip builds in an isolated environment that hides the packages already installed. A PyTorch
extension must be compiled against the very torch that will load it (its C++ ABI and CUDA
version), so hiding the installed torch and building against another copy gives a library
that fails at import. We append the target environment's site-packages to sys.path (after
the isolated ones, so the build tools still come from the isolated environment). When no
torch is installed at all, we ask pip for one as a build requirement; setup.py then declares
the same requirement for the install, and pip resolves both to the same release.
"""
import importlib.util
import sys
import sysconfig

for _key in ("purelib", "platlib"):
    _path = sysconfig.get_paths()[_key]
    if _path not in sys.path:
        sys.path.append(_path)

from setuptools.build_meta import *  # noqa: E402,F401,F403


def _torch_if_missing():
    return [] if importlib.util.find_spec("torch") is not None else ["torch"]


# setuptools' own versions of these run setup.py to collect setup_requires, which needs torch
# before pip has had a chance to provide it; this project has no setup_requires.
def get_requires_for_build_wheel(config_settings=None):
    return ["wheel"] + _torch_if_missing()


def get_requires_for_build_editable(config_settings=None):
    return ["wheel"] + _torch_if_missing()
