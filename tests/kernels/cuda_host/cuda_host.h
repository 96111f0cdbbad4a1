// Host emulation of the CUDA that kernels/cuda/gram.cu and patch_match.cu use, so its kernels run (slowly) on a CPU:
// one std::thread per CUDA thread, std::barrier for __syncthreads, static locals for __shared__,
// and WMMA fragments that hold their whole 16 x 16 tile in every lane. It checks index math,
// bounds, padding and synchronisation placement, not speed nor the GPU's rounding.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx;
inline dim3 blockIdx, gridDim, blockDim;
inline std::barrier<>* block_barrier = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline float __int_as_float(int bits) {
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// CUDA's launch limits (every GPU since compute capability 3.0): a launch beyond them fails on
// the device with "invalid configuration argument", so the emulation refuses it too.
inline void check_launch_limits(dim3 grid, dim3 block) {
    const unsigned long long threads = 1ull * block.x * block.y * block.z;
    const bool ok = grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 2147483647u && grid.y <= 65535 &&
                    grid.z <= 65535 && block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024 &&
                    block.y <= 1024 && block.z <= 64 && threads <= 1024;
    if (!ok) {
        std::fprintf(stderr, "launch limits exceeded: grid (%u, %u, %u), block (%u, %u, %u)\n", grid.x, grid.y,
                     grid.z, block.x, block.y, block.z);
        std::exit(3);
    }
}

// Runs the grid one block at a time, each block's threads concurrently.
template <typename Kernel, typename... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
    check_launch_limits(grid, block);
    gridDim = grid;
    blockDim = block;
    const unsigned threads = block.x * block.y * block.z;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = dim3{x, y, z};
                std::barrier<> barrier(threads);
                block_barrier = &barrier;
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; ++t)
                    pool.emplace_back([=] {
                        threadIdx = dim3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
                        kernel(args...);
                    });
                for (auto& thread : pool) thread.join();
            }
}

template <typename Kernel, typename... Args>
void launch(dim3 grid, unsigned threads, Kernel kernel, Args... args) {
    launch(grid, dim3{threads, 1, 1}, kernel, args...);
}

struct __half { _Float16 value; };
inline float __half2float(__half h) { return static_cast<float>(h.value); }
inline __half __float2half(float f) { return __half{static_cast<_Float16>(f)}; }

struct __nv_bfloat16 { unsigned short bits; };
inline float __bfloat162float(__nv_bfloat16 h) {
    unsigned u = static_cast<unsigned>(h.bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {  // round to nearest even (no NaN inputs here)
    unsigned u;
    std::memcpy(&u, &f, 4);
    return __nv_bfloat16{static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float as_float(float x) { return x; }
inline float as_float(__half x) { return __half2float(x); }
inline float as_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// Element (r, c) of the 16 x 16 tile is x[16 r + c] in every lane (A: m x k, B: k x n, C: m x n).
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int num_elements = 256;
    float x[256];
};

template <typename Use, typename T, typename L>
void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float v) {
    for (float& e : f.x) e = v;
}
template <typename T>
void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major>& f, const T* p, unsigned ldm) {
    for (int m = 0; m < 16; ++m)
        for (int k = 0; k < 16; ++k) f.x[16 * m + k] = as_float(p[m * ldm + k]);
}
template <typename T>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major>& f, const T* p, unsigned ldm) {
    for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 16; ++n) f.x[16 * k + n] = as_float(p[n * ldm + k]);
}
template <typename T>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, row_major>& a,
              const fragment<matrix_b, 16, 16, 16, T, col_major>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[256];
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n) {
            float s = c.x[16 * m + n];
            for (int k = 0; k < 16; ++k) s += a.x[16 * m + k] * b.x[16 * k + n];
            out[16 * m + n] = s;
        }
    std::memcpy(d.x, out, sizeof out);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
    if (layout != mem_row_major) std::abort();
    if (threadIdx.x % 32 != 0) return;  // one lane writes: no race
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n) p[m * ldm + n] = f.x[16 * m + n];
}
}  // namespace nvcuda::wmma
