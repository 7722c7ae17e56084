// Definitions shared by every op family's kernels on both devices; free of torch headers.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif

namespace fastspike {

// Input/state type pairs: 0 fp32/fp32, 1 fp16/fp32, 2 bf16/fp32, 3 fp64/fp64.
enum DTypeCase : int { kFloat = 0, kHalf, kBFloat16, kDouble };

constexpr int64_t kCpuChunk = 2048;  // neurons per CPU task; the T loop runs over one chunk at a time

inline int64_t cpu_num_chunks(int64_t N) { return (N + kCpuChunk - 1) / kCpuChunk; }

}  // namespace fastspike
