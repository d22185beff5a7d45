// Stand-in for the CUDA toolkit header <cuda_runtime.h> in the emulated build: everything is in cuda_emu.h.
#pragma once
#include "../cuda_emu.h"
