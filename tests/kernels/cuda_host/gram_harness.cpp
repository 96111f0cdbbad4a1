// Runs kernels/cuda/gram.cu on the CPU (cuda_host.h) on small-integer features, where every
// float32 sum is exact, and counts the outputs that differ from a double reference; also checks
// that every partial is written and exactly symmetric. Build with -DGRAM_CU='"<path>"'
// (and -D__CUDA_ARCH__=800 for the tensor-core path).
// usage: gram_harness f|h|b batch channels positions splits chunk
#include "cuda_host.h"
#include GRAM_CU
#include <cstdio>
#include <string>

static double value(int b, int c, long long p) { return double((b * 7 + c * 13 + p * 5 + (c * p) % 11) % 9 - 4); }

template <typename T>
static long long run(int batch, int channels, long long positions, int splits, long long chunk) {
    const long long C = channels, P = positions, map = C * P;
    std::vector<T> f(batch * map);
    for (int b = 0; b < batch; ++b)
        for (long long c = 0; c < C; ++c)
            for (long long p = 0; p < P; ++p) f[b * map + c * P + p] = from_float<T>(float(value(b, int(c), p)));
    std::vector<float> partials(batch * splits * C * C, NAN);
    const unsigned side = unsigned((C + TILE - 1) / TILE);
    launch(dim3{side * (side + 1) / 2, unsigned(splits), unsigned(batch)}, THREADS, gram_partial<T>, f.data(),
           partials.data(), channels, positions, chunk);
    long long errors = 0;
    for (int b = 0; b < batch; ++b)
        for (long long i = 0; i < C; ++i)
            for (long long j = 0; j < C; ++j) {
                double sum = 0, expected = 0;
                for (int s = 0; s < splits; ++s) {
                    const float* w = &partials[(b * splits + s) * C * C];
                    sum += w[i * C + j];
                    errors += !(w[i * C + j] == w[j * C + i]);  // also catches NaN: never written
                }
                for (long long p = 0; p < P; ++p) expected += value(b, int(i), p) * value(b, int(j), p);
                errors += sum != expected;
            }
    std::vector<float> sym(batch * C * C);  // S = dG + dG^T of an integer dG
    for (int b = 0; b < batch; ++b)
        for (long long i = 0; i < C; ++i)
            for (long long j = 0; j < C; ++j)
                sym[b * C * C + i * C + j] = float((i * 3 + j * 5 + b) % 7 + (j * 3 + i * 5 + b) % 7 - 6);
    std::vector<T> grad(batch * map, from_float<T>(NAN));
    launch(dim3{unsigned((P + TILE - 1) / TILE), side, unsigned(batch)}, THREADS, gram_backward<T>, sym.data(),
           f.data(), grad.data(), channels, positions, 1.0f);
    for (int b = 0; b < batch; ++b)
        for (long long c = 0; c < C; ++c)
            for (long long p = 0; p < P; ++p) {
                double expected = 0;
                for (long long k = 0; k < C; ++k) expected += sym[b * C * C + c * C + k] * value(b, int(k), p);
                errors += !(to_float(grad[b * map + c * P + p]) == to_float(from_float<T>(float(expected))));
            }
    return errors;
}

int main(int argc, char** argv) {
    if (argc != 7) return 2;
    const int batch = std::stoi(argv[2]), channels = std::stoi(argv[3]), splits = std::stoi(argv[5]);
    const long long positions = std::stoll(argv[4]), chunk = std::stoll(argv[6]);
    const char type = argv[1][0];
    const long long errors = type == 'f' ? run<float>(batch, channels, positions, splits, chunk)
                           : type == 'h' ? run<__half>(batch, channels, positions, splits, chunk)
                                         : run<__nv_bfloat16>(batch, channels, positions, splits, chunk);
    std::printf("%lld mismatches\n", errors);
    return errors != 0;
}
