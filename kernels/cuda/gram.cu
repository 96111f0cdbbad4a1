// Gram matrix G = F F^T / P of features F (C x P), and its backward dF = (dG + dG^T) F / P.
//
// Templated on the feature type (float, __half, __nv_bfloat16); every product is accumulated in
// float32. The forward computes only the upper-triangle tiles (block row <= block column) and
// mirrors them, so each pair of channels is computed once.

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define TILE 16

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

// grid: (C/TILE, C/TILE); blocks below the diagonal return at once.
template <typename T>
__global__ void gram_upper(const T* __restrict__ features, float* __restrict__ gram, int channels,
                           long long positions, float scale) {
    if (blockIdx.y > blockIdx.x) return;
    __shared__ float rows_tile[TILE][TILE + 1];
    __shared__ float cols_tile[TILE][TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int i = blockIdx.y * TILE + ty;   // output row (channel)
    const int j = blockIdx.x * TILE + tx;   // output column (channel)
    float acc = 0.0f;
    for (long long p0 = 0; p0 < positions; p0 += TILE) {
        const long long p = p0 + tx;
        const int row_channel = blockIdx.y * TILE + ty;
        const int col_channel = blockIdx.x * TILE + ty;
        rows_tile[ty][tx] = (row_channel < channels && p < positions)
            ? to_float(features[(long long)row_channel * positions + p]) : 0.0f;
        cols_tile[ty][tx] = (col_channel < channels && p < positions)
            ? to_float(features[(long long)col_channel * positions + p]) : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE; ++k) acc += rows_tile[ty][k] * cols_tile[tx][k];
        __syncthreads();
    }
    if (i < channels && j < channels && i <= j) {
        gram[(long long)i * channels + j] = acc * scale;
        gram[(long long)j * channels + i] = acc * scale;
    }
}

// dF[c, p] = scale * sum_k (dG[c, k] + dG[k, c]) F[k, p]; grid: (P/TILE, C/TILE).
template <typename T>
__global__ void gram_backward(const float* __restrict__ grad_gram, const T* __restrict__ features,
                              T* __restrict__ grad_features, int channels, long long positions, float scale) {
    __shared__ float g_tile[TILE][TILE + 1];
    __shared__ float f_tile[TILE][TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.y * TILE + ty;
    const long long p = (long long)blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < channels; k0 += TILE) {
        const int k = k0 + tx;
        g_tile[ty][tx] = (c < channels && k < channels)
            ? grad_gram[(long long)c * channels + k] + grad_gram[(long long)k * channels + c] : 0.0f;
        const int kr = k0 + ty;
        f_tile[ty][tx] = (kr < channels && p < positions) ? to_float(features[(long long)kr * positions + p]) : 0.0f;
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE; ++kk) acc += g_tile[ty][kk] * f_tile[kk][tx];
        __syncthreads();
    }
    if (c < channels && p < positions) grad_features[(long long)c * positions + p] = from_float<T>(acc * scale);
}

// Explicit instantiations, so nvcc -c in CI compiles every variant CuPy will ask for.
template __global__ void gram_upper<float>(const float*, float*, int, long long, float);
template __global__ void gram_upper<__half>(const __half*, float*, int, long long, float);
template __global__ void gram_upper<__nv_bfloat16>(const __nv_bfloat16*, float*, int, long long, float);
template __global__ void gram_backward<float>(const float*, const float*, float*, int, long long, float);
template __global__ void gram_backward<__half>(const float*, const __half*, __half*, int, long long, float);
template __global__ void gram_backward<__nv_bfloat16>(const float*, const __nv_bfloat16*, __nv_bfloat16*, int,
                                                      long long, float);
