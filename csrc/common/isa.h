// Which instruction set the per-ISA CPU kernels run: the best this CPU has (AVX-512, AVX2 + FMA,
// or the generic x86-64 baseline), capped by SMDIM_CPU_ISA=generic|avx2|avx512 (to test every
// build on one machine). Decided once per process; used by the ATen glue, not by the kernels.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace smdim {

inline bool cpu_has(const std::string& feature_set) {
  if (feature_set == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

inline const std::string& selected_isa() {
  static const std::string isa = [] {
    const char* cap = std::getenv("SMDIM_CPU_ISA");
    const std::string want = cap && *cap ? cap : "avx512";
    TORCH_CHECK(want == "avx512" || want == "avx2" || want == "generic",
                "SMDIM_CPU_ISA must be one of avx512, avx2, generic; got '", want, "'");
    if (want == "avx512" && cpu_has("avx512")) return std::string("avx512");
    if ((want == "avx512" || want == "avx2") && cpu_has("avx2")) return std::string("avx2");
    return std::string("generic");
  }();
  return isa;
}

// One op's kernel table for the selected instruction set, from its three builds' accessors.
template <typename Table>
const Table& select_kernels(const Table& (*avx512)(), const Table& (*avx2)(), const Table& (*generic)()) {
  const std::string& isa = selected_isa();
  return isa == "avx512" ? avx512() : isa == "avx2" ? avx2() : generic();
}

}  // namespace smdim
