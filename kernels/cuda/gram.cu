// Gram matrix G = F F^T / P of features F (C x P per batch item), and its backward.
//
// Forward, split-K: block (t, s, b) computes the partial Gram of one TILE x TILE output tile t
// (upper triangle only: tile row <= tile column) over chunk s of the positions of batch item b,
// and writes it, mirrored, to partials[b][s] (B x S x C x C float32); the host sums the S partials
// as a balanced tree and divides by P. Why: a 4K UHD map has 8.3M positions, and one block per
// tile walking all of them leaves most SMs idle and makes one float32 sum 8.3M terms long. Here
// the float32 sums stay short whatever P is: chains of SUB_TILES * K_TILE positions, folded into a
// second accumulator, then ceil(log2 S) pairwise adds.
//
// float features use CUDA-core FMAs (float32 throughout); __half (sm_70+) and __nv_bfloat16
// (sm_80+) use tensor cores (WMMA 16x16x16, exact products, float32 accumulation), and CUDA-core
// FMAs below those architectures. Any C and P: tiles are zero-padded in shared memory.
//
// Backward: dF = scale * S F with S = dG + dG^T (symmetrised by the host): a GEMM over channels,
// parallel over positions.
//
// Compiled at run time by NVRTC (CuPy): no host headers; cuda_fp16.h, cuda_bf16.h and mma.h come
// from the CUDA include directory CuPy passes.

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>

#define TILE 64       // output tile side (channels); also the backward's channel x position tile
#define K_TILE 64     // positions per shared-memory stage; chunks are multiples of it
#define SUB_TILES 4   // K tiles summed per inner accumulator before it is folded (256 positions)
#define THREADS 256   // 16 x 16; on CUDA cores thread (tx, ty) owns outputs (ty + 16 a, tx + 16 b)
#define MIN_BLOCKS 2  // resident blocks per SM asked of ptxas: <= 128 registers, and no spills
#define BK 32         // channels per shared-memory stage of the backward
#define PAD 1         // float rows padded by one word: column reads hit 32 different banks
#define HPAD 8        // 16-bit rows padded by 8: WMMA wants ldm % 8 == 0 and 32-byte-aligned rows

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

// Whether this architecture has tensor cores for T (device compilation only).
template <typename T> struct TensorCores { static constexpr bool value = false; };
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
template <> struct TensorCores<__half> { static constexpr bool value = true; };
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
template <> struct TensorCores<__nv_bfloat16> { static constexpr bool value = true; };
#endif

// Upper-triangle tile t -> (tile row ti, tile column tj), ti <= tj, row by row.
__device__ __forceinline__ void upper_tile(int t, int tiles, int& ti, int& tj) {
    ti = 0;
    while (t >= tiles - ti) { t -= tiles - ti; ++ti; }
    tj = ti + t;
}

// Writes the tile staged in shared memory (row stride ld) at (i0, j0) of out (C x C): entry (i, j)
// with i <= j to (i, j) and, if i < j, to (j, i), so out is exactly symmetric (entries below the
// diagonal of a diagonal tile are dropped). Both passes write consecutive addresses.
__device__ void write_symmetric(const float* stage, int ld, float* out, int channels, int i0, int j0) {
    for (int idx = threadIdx.x; idx < TILE * TILE; idx += THREADS) {
        const int r = idx / TILE, c = idx % TILE;
        int i = i0 + r, j = j0 + c;
        if (i < channels && j < channels && i <= j) out[(long long)i * channels + j] = stage[r * ld + c];
        i = i0 + c;
        j = j0 + r;
        if (i < channels && j < channels && i < j) out[(long long)j * channels + i] = stage[c * ld + r];
    }
}

// CUDA-core path: both row blocks converted to float in shared memory; each k step reads 8 words
// for 16 FMAs per thread.
template <typename T>
__device__ void partial_tile_fma(const T* __restrict__ f, float* __restrict__ out, int channels,
                                 long long positions, long long begin, long long end, int i0, int j0) {
    __shared__ float rows[TILE][K_TILE + PAD];
    __shared__ float cols[TILE][K_TILE + PAD];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    float acc[4][4] = {}, total[4][4] = {};
    int step = 0;
    for (long long p0 = begin; p0 < end; p0 += K_TILE) {
        for (int idx = threadIdx.x; idx < TILE * K_TILE; idx += THREADS) {
            const int r = idx / K_TILE, k = idx % K_TILE;
            const long long p = p0 + k;
            rows[r][k] = (p < end && i0 + r < channels) ? to_float(f[(long long)(i0 + r) * positions + p]) : 0.0f;
            cols[r][k] = (p < end && j0 + r < channels) ? to_float(f[(long long)(j0 + r) * positions + p]) : 0.0f;
        }
        __syncthreads();
#pragma unroll 4
        for (int k = 0; k < K_TILE; ++k) {
            float a[4], b[4];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                a[q] = rows[ty + 16 * q][k];
                b[q] = cols[tx + 16 * q][k];
            }
#pragma unroll
            for (int x = 0; x < 4; ++x)
#pragma unroll
                for (int y = 0; y < 4; ++y) acc[x][y] = fmaf(a[x], b[y], acc[x][y]);
        }
        __syncthreads();
        if (++step == SUB_TILES || p0 + K_TILE >= end) {
            step = 0;
#pragma unroll
            for (int x = 0; x < 4; ++x)
#pragma unroll
                for (int y = 0; y < 4; ++y) { total[x][y] += acc[x][y]; acc[x][y] = 0.0f; }
        }
    }
#pragma unroll
    for (int x = 0; x < 4; ++x)
#pragma unroll
        for (int y = 0; y < 4; ++y) rows[ty + 16 * x][tx + 16 * y] = total[x][y];  // K_TILE >= TILE
    __syncthreads();
    write_symmetric(&rows[0][0], K_TILE + PAD, out, channels, i0, j0);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
// Tensor-core path: 16-bit row blocks copied as they are; warp w owns the fragments
// (w / 2, 2 (w % 2) + q), q < 2, of the 4 x 4 fragments of the tile.
template <typename T>
__device__ void partial_tile_wmma(const T* __restrict__ f, float* __restrict__ out, int channels,
                                  long long positions, long long begin, long long end, int i0, int j0) {
    using namespace nvcuda;
    __shared__ __align__(32) T rows[TILE][K_TILE + HPAD];
    __shared__ __align__(32) T cols[TILE][K_TILE + HPAD];
    __shared__ __align__(32) float stage[TILE][TILE + 4];  // float ldm: multiple of 4
    const int warp = threadIdx.x / 32, fi = warp / 2, fj = (warp % 2) * 2;
    const T zero = from_float<T>(0.0f);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2], total[2];
    for (int q = 0; q < 2; ++q) {
        wmma::fill_fragment(acc[q], 0.0f);
        wmma::fill_fragment(total[q], 0.0f);
    }
    int step = 0;
    for (long long p0 = begin; p0 < end; p0 += K_TILE) {
        for (int idx = threadIdx.x; idx < TILE * K_TILE; idx += THREADS) {
            const int r = idx / K_TILE, k = idx % K_TILE;
            const long long p = p0 + k;
            rows[r][k] = (p < end && i0 + r < channels) ? f[(long long)(i0 + r) * positions + p] : zero;
            cols[r][k] = (p < end && j0 + r < channels) ? f[(long long)(j0 + r) * positions + p] : zero;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < K_TILE; k += 16) {
            // A = rows (16 channels x 16 positions, row-major); B = cols^T, i.e. cols read col-major.
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::load_matrix_sync(a, &rows[fi * 16][k], K_TILE + HPAD);
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
                wmma::load_matrix_sync(b, &cols[(fj + q) * 16][k], K_TILE + HPAD);
                wmma::mma_sync(acc[q], a, b, acc[q]);
            }
        }
        __syncthreads();
        if (++step == SUB_TILES || p0 + K_TILE >= end) {
            step = 0;
            for (int q = 0; q < 2; ++q) {
                for (int e = 0; e < acc[q].num_elements; ++e) total[q].x[e] += acc[q].x[e];
                wmma::fill_fragment(acc[q], 0.0f);
            }
        }
    }
    for (int q = 0; q < 2; ++q)
        wmma::store_matrix_sync(&stage[fi * 16][(fj + q) * 16], total[q], TILE + 4, wmma::mem_row_major);
    __syncthreads();
    write_symmetric(&stage[0][0], TILE + 4, out, channels, i0, j0);
}
#endif

// Partial Grams: grid (upper tiles, splits, batch), THREADS threads; chunk is a multiple of
// K_TILE, every split non-empty; partials is B x S x C x C, every entry written.
template <typename T>
__global__ void __launch_bounds__(THREADS, MIN_BLOCKS)
gram_partial(const T* __restrict__ features, float* __restrict__ partials, int channels, long long positions,
             long long chunk) {
    int ti, tj;
    upper_tile(blockIdx.x, (channels + TILE - 1) / TILE, ti, tj);
    const long long begin = blockIdx.y * chunk;
    const long long end = begin + chunk < positions ? begin + chunk : positions;
    const T* f = features + (long long)blockIdx.z * channels * positions;
    float* out = partials + ((long long)blockIdx.z * gridDim.y + blockIdx.y) * channels * channels;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    if constexpr (TensorCores<T>::value) {
        partial_tile_wmma<T>(f, out, channels, positions, begin, end, ti * TILE, tj * TILE);
    } else
#endif
    {
        partial_tile_fma<T>(f, out, channels, positions, begin, end, ti * TILE, tj * TILE);
    }
}

// dF[c, p] = scale * sum_k S[c, k] F[k, p], S = dG + dG^T (C x C float32). grid (ceil(P / TILE),
// ceil(C / TILE), batch), THREADS threads; thread (tx, ty) owns channels ty + 16 a, positions tx + 16 b.
template <typename T>
__global__ void __launch_bounds__(THREADS, MIN_BLOCKS)
gram_backward(const float* __restrict__ sym, const T* __restrict__ features, T* __restrict__ grad_features,
              int channels, long long positions, float scale) {
    __shared__ float s_tile[TILE][BK + PAD];  // S[c0 + c][k0 + k]
    __shared__ float f_tile[BK][TILE + PAD];  // F[k0 + k][p0 + p]
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int c0 = blockIdx.y * TILE;
    const long long p0 = (long long)blockIdx.x * TILE;
    const long long offset = (long long)blockIdx.z * channels * positions;
    const float* s = sym + (long long)blockIdx.z * channels * channels;
    const T* f = features + offset;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < channels; k0 += BK) {
        for (int idx = threadIdx.x; idx < TILE * BK; idx += THREADS) {
            const int c = idx / BK, k = idx % BK;
            s_tile[c][k] = (c0 + c < channels && k0 + k < channels)
                ? s[(long long)(c0 + c) * channels + k0 + k] : 0.0f;
            const int kr = idx / TILE, p = idx % TILE;
            f_tile[kr][p] = (k0 + kr < channels && p0 + p < positions)
                ? to_float(f[(long long)(k0 + kr) * positions + p0 + p]) : 0.0f;
        }
        __syncthreads();
#pragma unroll 4
        for (int k = 0; k < BK; ++k) {
            float a[4], b[4];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                a[q] = s_tile[ty + 16 * q][k];
                b[q] = f_tile[k][tx + 16 * q];
            }
#pragma unroll
            for (int x = 0; x < 4; ++x)
#pragma unroll
                for (int y = 0; y < 4; ++y) acc[x][y] = fmaf(a[x], b[y], acc[x][y]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int x = 0; x < 4; ++x)
#pragma unroll
        for (int y = 0; y < 4; ++y) {
            const int c = c0 + ty + 16 * x;
            const long long p = p0 + tx + 16 * y;
            if (c < channels && p < positions)
                grad_features[offset + (long long)c * positions + p] = from_float<T>(acc[x][y] * scale);
        }
}

// Explicit instantiations, so that nvcc -c compiles every variant too (NVRTC gets them as name
// expressions, kernels/_cuda.py KERNELS).
template __global__ void gram_partial<float>(const float*, float*, int, long long, long long);
template __global__ void gram_partial<__half>(const __half*, float*, int, long long, long long);
template __global__ void gram_partial<__nv_bfloat16>(const __nv_bfloat16*, float*, int, long long, long long);
template __global__ void gram_backward<float>(const float*, const float*, float*, int, long long, float);
template __global__ void gram_backward<__half>(const float*, const __half*, __half*, int, long long, float);
template __global__ void gram_backward<__nv_bfloat16>(const float*, const __nv_bfloat16*, __nv_bfloat16*, int,
                                                      long long, float);
