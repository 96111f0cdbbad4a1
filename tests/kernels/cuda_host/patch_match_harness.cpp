// Runs kernels/cuda/patch_match.cu on the CPU (cuda_host.h) on small-integer rows, where every
// float32 dot product is exact, and counts the image patches whose (index, score) differ from a
// double reference that keeps the first maximum (torch.argmax's tie rule). With ties, the style
// rows repeat three patterns, so most maxima are shared by several style patches.
// Build with -DPATCH_MATCH_CU='"<path>"'.
// usage: patch_match_harness n m d ties(0|1)
#include "cuda_host.h"
#include PATCH_MATCH_CU
#include <string>

static float value(long long row, long long k, int salt) {
    return float((row * 5 + k * 3 + salt + (row * k + row * row) % 7) % 9 - 4);
}

int main(int argc, char** argv) {
    if (argc != 5) return 2;
    const int n = std::stoi(argv[1]), m = std::stoi(argv[2]), d = std::stoi(argv[3]);
    const bool ties = argv[4][0] == '1';
    std::vector<float> patches(1ll * n * d), style(1ll * m * d);
    for (long long i = 0; i < n; ++i)
        for (long long k = 0; k < d; ++k) patches[i * d + k] = value(i, k, 1);
    for (long long j = 0; j < m; ++j)
        for (long long k = 0; k < d; ++k) style[j * d + k] = value(ties ? j % 3 : j, k, 2);
    std::vector<long long> index(n, -1);
    std::vector<float> score(n, NAN);
    launch(dim3{unsigned((n + TILE - 1) / TILE), 1, 1}, dim3{TILE, TILE, 1}, mrf_nearest_ncc, patches.data(),
           style.data(), index.data(), score.data(), n, m, d);
    long long errors = 0, tied = 0;
    for (long long i = 0; i < n; ++i) {
        double best = -INFINITY;
        long long best_j = 0, count = 0;
        for (long long j = 0; j < m; ++j) {
            double s = 0;
            for (long long k = 0; k < d; ++k) s += double(patches[i * d + k]) * style[j * d + k];
            if (s > best) best = s, best_j = j, count = 1;
            else if (s == best) ++count;
        }
        tied += count > 1;
        errors += index[i] != best_j || double(score[i]) != best;
    }
    std::printf("%lld mismatches, %lld of %d patches tied\n", errors, tied, n);
    return errors != 0 || (ties && m > 3 && tied == 0);
}
