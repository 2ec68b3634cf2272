// The CPU's memory ceiling for the AdamW update, beside `adamw-tau bench --device cpu`:
// one pass that reads p, g, m, v and writes p, m, v (28 B/param, fp32) with trivial math, and
// one that only reads the four (16 B/param). GPT-2-124M's parameter count; 2 GB of arrays.
//   g++ -O3 -march=native -fopenmp bench/cpu_stream.cpp -o /tmp/cpu_stream && /tmp/cpu_stream
#include <chrono>
#include <cstdio>
#include <cstdlib>

int main() {
  const long n = 124439808;
  float* p = static_cast<float*>(std::aligned_alloc(64, n * 4));
  float* g = static_cast<float*>(std::aligned_alloc(64, n * 4));
  float* m = static_cast<float*>(std::aligned_alloc(64, n * 4));
  float* v = static_cast<float*>(std::aligned_alloc(64, n * 4));
#pragma omp parallel for
  for (long i = 0; i < n; ++i) p[i] = 1.0f, g[i] = 0.5f, m[i] = 0.0f, v[i] = 0.0f;
  auto ms_since = [](auto t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for simd
    for (long i = 0; i < n; ++i) {
      const float gi = g[i];
      m[i] = 0.9f * m[i] + 0.1f * gi;
      v[i] = 0.999f * v[i] + 0.001f * gi * gi;
      p[i] = p[i] * 0.9999f - 1e-3f * m[i];
    }
    const double ms = ms_since(t0);
    std::printf("update, 28 B/param: %7.1f ms  %5.1f GB/s\n", ms, 28.0 * n / ms / 1e6);
  }
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    float s = 0.0f;
#pragma omp parallel for simd reduction(+ : s)
    for (long i = 0; i < n; ++i) s += p[i] + g[i] + m[i] + v[i];
    const double ms = ms_since(t0);
    std::printf("read,   16 B/param: %7.1f ms  %5.1f GB/s  (%g)\n", ms, 16.0 * n / ms / 1e6, s);
  }
}
