// Nearest style patch by normalised cross-correlation, fused with the argmax.
//
// patches (N x D) and style (M x D) are row-major float32 with unit-norm rows (normalised by the
// caller), so the score is a dot product. Each block owns TILE image patches and walks every style
// patch in tiles of TILE, staging both through shared memory in slices of TILE_D features: a
// GEMM whose (N x M) result is reduced to a running (best score, index) per image patch and
// never written out. Ties keep the lowest style index, as torch.argmax does.
//
// Compiled at run time by NVRTC (CuPy), which has no math.h: no INFINITY, hence NEG_INF.

#define TILE 16
#define TILE_D 16
#define NEG_INF (-__int_as_float(0x7f800000))  // -infinity (+infinity is CUDART_INF_F, same bits)

extern "C" __global__ void mrf_nearest_ncc(const float* __restrict__ patches,
                                           const float* __restrict__ style,
                                           long long* __restrict__ best_index,
                                           float* __restrict__ best_score,
                                           int n, int m, int d) {
    __shared__ float a_tile[TILE][TILE_D + 1];   // +1: no bank conflicts on the transposed read
    __shared__ float b_tile[TILE][TILE_D + 1];
    __shared__ float scores[TILE][TILE + 1];

    const int tx = threadIdx.x;            // style patch within the tile
    const int ty = threadIdx.y;            // image patch within the tile
    const int row = blockIdx.x * TILE + ty;

    float my_best = NEG_INF;
    long long my_index = 0;

    for (int col0 = 0; col0 < m; col0 += TILE) {
        const int col = col0 + tx;
        float acc = 0.0f;
        for (int k0 = 0; k0 < d; k0 += TILE_D) {
            // Load a TILE x TILE_D slice of the image patches and of the style patches.
            const int k = k0 + tx;
            a_tile[ty][tx] = (row < n && k < d) ? patches[(long long)row * d + k] : 0.0f;
            const int style_row = col0 + ty;
            b_tile[ty][tx] = (style_row < m && k < d) ? style[(long long)style_row * d + k] : 0.0f;
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < TILE_D; ++kk) {
                acc += a_tile[ty][kk] * b_tile[tx][kk];
            }
            __syncthreads();
        }
        scores[ty][tx] = (col < m) ? acc : NEG_INF;
        __syncthreads();
        if (tx == 0) {
            // One thread per image patch scans the tile's scores in order: first maximum wins.
            for (int j = 0; j < TILE; ++j) {
                const float s = scores[ty][j];
                if (s > my_best) {
                    my_best = s;
                    my_index = col0 + j;
                }
            }
        }
        __syncthreads();
    }
    if (tx == 0 && row < n) {
        best_index[row] = my_index;
        best_score[row] = my_best;
    }
}
