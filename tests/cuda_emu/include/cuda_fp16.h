// Stand-in for the CUDA toolkit header <cuda_fp16.h> in the emulated build: everything is in cuda_emu.h.
#pragma once
#include "../cuda_emu.h"
