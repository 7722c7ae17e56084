// CPU kernel helpers shared by the op families: the clone attribute, compile-time dispatch, the chunk
// loop, and fp16/bf16 loads and stores the vectoriser can see through.
#pragma once

#include "common.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace fastspike {

// The chunk loops are compiled for AVX-512, AVX2 and baseline x86-64, picked at load time (ifunc), so one
// build runs everywhere and uses wide vectors where they exist. Spikes, potentials and per-element
// gradients do not depend on the clone (IEEE add/sub/mul/div/compare only, no FMA contraction); PLIF's
// grad_w sums in an order set by the vector width, so it is reproducible bit for bit on one machine.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FS_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FS_CPU_CLONES
#endif

// Calls f(std::integral_constant<int, value>) for the one value in Vs equal to `value`.
template <int... Vs, typename F>
void dispatch_int(int value, std::integer_sequence<int, Vs...>, F&& f) {
  ((value == Vs ? (f(std::integral_constant<int, Vs>{}), 0) : 0), ...);
}

template <typename F>
void dispatch_bool(bool value, F&& f) {
  if (value) f(std::true_type{}); else f(std::false_type{});
}

// Splitting is by chunk index, never by thread count, so PLIF's partial sums (and their order) are
// the same whatever torch.get_num_threads() is: grad_w is reproducible bit for bit.
template <typename F>
void for_each_chunk(int64_t T, int64_t N, F&& f) {
  const int64_t chunks = cpu_num_chunks(N);
  // Keep at least ~64k element-steps per task so small layers are not dominated by thread wake-ups.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, kCpuChunk * T));
  at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t j0 = ch * kCpuChunk;
      f(ch, j0, std::min(kCpuChunk, N - j0));
    }
  });
}

template <typename T>
T load_scalar(const void* p) { return p ? *static_cast<const T*>(p) : T(0); }

// fp16/bf16 conversions written with integer ops and selects, which the vectoriser can see through (c10's
// are calls or scalar intrinsics, which keep the loops scalar). They give c10's scalar conversions' values
// (IEEE round to nearest even; stores turn NaN into a quiet NaN, loads keep its payload, which arithmetic
// quiets anyway).
inline float float_from_bits(uint32_t b) { float f; std::memcpy(&f, &b, sizeof(f)); return f; }
inline uint32_t bits_of(float f) { uint32_t b; std::memcpy(&b, &f, sizeof(b)); return b; }

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;
  // Normal halves: rebias the exponent (15 -> 127); Inf/NaN: exponent all ones, payload kept.
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23) + (em >= 0x7C00u ? (128u - 16u) << 23 : 0u);
  // Subnormal halves are em * 2^-24, exact in fp32.
  const uint32_t subnormal = bits_of(static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f);
  return float_from_bits(sign | (em >= 0x0400u ? normal : subnormal));
}

inline uint16_t float_to_half(float f) {
  const uint32_t x = bits_of(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  // Normal range: drop 13 mantissa bits with round-to-nearest-even; a carry moves into the exponent.
  const uint32_t r = a - ((127u - 15u) << 23);
  const uint32_t normal = (r + 0x0FFFu + ((r >> 13) & 1u)) >> 13;
  // Below 2^-14: 0.5 + |f| has an ulp of 2^-24, so the addition rounds |f| to a multiple of the half
  // subnormal step (to even), and the bits above 0.5's are that multiple (0x400 is the smallest normal).
  const uint32_t subnormal = bits_of(float_from_bits(a) + 0.5f) - bits_of(0.5f);
  // 65520 = 0x477FF000 and above round to Inf.
  const uint32_t mag = a > 0x7F800000u ? 0x7E00u : a >= 0x477FF000u ? 0x7C00u : a >= 0x38800000u ? normal : subnormal;
  return static_cast<uint16_t>(sign | mag);
}

inline uint16_t float_to_bfloat16(float f) {
  const uint32_t x = bits_of(f);
  const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

// Loads of x / grad_spike and stores of spikes / grad_x in the input dtype S, the arithmetic in T.
template <typename S, typename T>
T load_input(const S* p, int64_t i) { return static_cast<T>(p[i]); }
template <>
inline float load_input<c10::Half, float>(const c10::Half* p, int64_t i) {
  return half_to_float(reinterpret_cast<const uint16_t*>(p)[i]);
}
template <>
inline float load_input<c10::BFloat16, float>(const c10::BFloat16* p, int64_t i) {
  return float_from_bits(static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(p)[i]) << 16);
}

template <typename S, typename T>
void store_spike(S* p, int64_t i, T s) { p[i] = static_cast<S>(s); }
template <>
inline void store_spike<c10::Half, float>(c10::Half* p, int64_t i, float s) {
  reinterpret_cast<uint16_t*>(p)[i] = s != 0.0f ? 0x3C00 : 0;  // fp16 1.0
}
template <>
inline void store_spike<c10::BFloat16, float>(c10::BFloat16* p, int64_t i, float s) {
  reinterpret_cast<uint16_t*>(p)[i] = s != 0.0f ? 0x3F80 : 0;  // bf16 1.0
}

template <typename S, typename T>
void store_rounded(S* p, int64_t i, T value) { p[i] = static_cast<S>(value); }
template <>
inline void store_rounded<c10::Half, float>(c10::Half* p, int64_t i, float value) {
  reinterpret_cast<uint16_t*>(p)[i] = float_to_half(value);
}
template <>
inline void store_rounded<c10::BFloat16, float>(c10::BFloat16* p, int64_t i, float value) {
  reinterpret_cast<uint16_t*>(p)[i] = float_to_bfloat16(value);
}

}  // namespace fastspike
