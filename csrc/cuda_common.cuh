// CUDA kernel helpers shared by the op families: conversions between the input and state types,
// 16-byte packs, a fixed-order block sum, the vector-width choice and launch checks. No torch headers.
#pragma once

#include "common.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace fastspike {

constexpr int kThreads = 128;

__device__ __forceinline__ float to_state(float v, float) { return v; }
__device__ __forceinline__ float to_state(__half v, float) { return __half2float(v); }
__device__ __forceinline__ float to_state(__nv_bfloat16 v, float) { return __bfloat162float(v); }
__device__ __forceinline__ double to_state(double v, double) { return v; }

template <typename S> __device__ __forceinline__ S from_state(float v);
template <> __device__ __forceinline__ float from_state<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_state<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_state<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <typename S> __device__ __forceinline__ S from_state(double v) { return v; }

template <typename U, int VEC>
struct alignas(sizeof(U) * VEC) Pack {
  U v[VEC];
};

template <typename U, int VEC>
__device__ __forceinline__ Pack<U, VEC> load(const void* base, int64_t i) {
  return *reinterpret_cast<const Pack<U, VEC>*>(static_cast<const U*>(base) + i);
}

template <typename U, int VEC>
__device__ __forceinline__ void store(void* base, int64_t i, const Pack<U, VEC>& p) {
  *reinterpret_cast<Pack<U, VEC>*>(static_cast<U*>(base) + i) = p;
}

template <typename T>
__device__ __forceinline__ T load_scalar(const void* p) { return p ? *static_cast<const T*>(p) : T(0); }

// Sums one double per thread over the block in a fixed order; thread 0 gets the result.
__device__ inline double block_sum(double x) {
  __shared__ double warp_sums[kThreads / 32];
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) x += __shfl_down_sync(0xffffffffu, x, d);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    x = warp_sums[0];
    for (int w = 1; w < kThreads / 32; ++w) x += warp_sums[w];
  }
  return x;
}

inline bool aligned(const void* p, int bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// 16-byte input packs when N and every pointer allow it, else one neuron per thread.
template <typename S, typename T>
int pick_vec(int64_t N, std::initializer_list<const void*> inputs, std::initializer_list<const void*> states) {
  constexpr int vec = 16 / sizeof(S);
  if (N % vec != 0) return 1;
  for (const void* p : inputs) if (!aligned(p, vec * sizeof(S))) return 1;
  for (const void* p : states) if (!aligned(p, vec * sizeof(T))) return 1;
  return vec;
}

inline int64_t num_blocks(int64_t N, int vec) { return ((N + vec - 1) / vec + kThreads - 1) / kThreads; }

inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("fastspike: ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace fastspike
