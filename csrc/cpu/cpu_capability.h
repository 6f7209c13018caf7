// Which instruction-set path the CPU kernels run (the same idea as ATen's DispatchStub and
// ATEN_CPU_CAPABILITY): every path is compiled into the library, and the best one this CPU runs
// is chosen at run time, or the one EASYHARD_CPU_CAPABILITY names (for tests and benchmarks).
#pragma once

#include <string>
#include <vector>

namespace easyhard {
namespace cpu {

enum class Path : int {
  kBaseline = 0,  // SSE2 on x86-64 (every x86-64 CPU), NEON on aarch64: 4 float lanes
  kAvx2 = 1,      // AVX2 + FMA + F16C: 8 lanes
  kAvx512 = 2,    // AVX-512 F/BW/DQ/VL + FMA + F16C: 16 lanes
};

// "baseline", "avx2" or "avx512".
const char* path_name(Path path);

// The paths this CPU (and its operating system) can run, baseline first.
const std::vector<Path>& runnable_paths();

// The path the kernels use now: EASYHARD_CPU_CAPABILITY (baseline, avx2, avx512; unset, empty or
// "auto" for the best runnable one), read at every call so a test can switch it. A name that is
// not a path, or one this CPU cannot run, raises (c10::Error) with a sentence naming both.
Path selected_path();

}  // namespace cpu
}  // namespace easyhard
