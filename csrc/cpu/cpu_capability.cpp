// Run-time choice of the CPU kernels' instruction-set path (see cpu_capability.h).
#include "cpu_capability.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace easyhard {
namespace cpu {

const char* path_name(Path path) {
  switch (path) {
    case Path::kAvx512:
      return "avx512";
    case Path::kAvx2:
      return "avx2";
    case Path::kBaseline:
      break;
  }
  return "baseline";
}

const std::vector<Path>& runnable_paths() {
  // __builtin_cpu_supports also checks that the operating system saves the wider registers.
  static const std::vector<Path> paths = [] {
    std::vector<Path> p{Path::kBaseline};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");
    if (avx2) p.push_back(Path::kAvx2);
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
      p.push_back(Path::kAvx512);
    }
#endif
    return p;
  }();
  return paths;
}

Path selected_path() {
  const auto& paths = runnable_paths();
  const char* env = std::getenv("EASYHARD_CPU_CAPABILITY");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) return paths.back();
  for (const Path p : {Path::kBaseline, Path::kAvx2, Path::kAvx512}) {
    if (std::strcmp(env, path_name(p)) != 0) continue;
    for (const Path q : paths) {
      if (q == p) return p;
    }
    TORCH_CHECK(false, "EASYHARD_CPU_CAPABILITY=", env,
                " names a path this CPU cannot run (it runs ", path_name(paths.back()),
                " at best); unset it or choose a lower one");
  }
  TORCH_CHECK(false, "EASYHARD_CPU_CAPABILITY=", env,
              " is not a CPU path: use baseline, avx2, avx512 or auto");
}

}  // namespace cpu
}  // namespace easyhard
