// The CPU's memory ceiling for the AdamW update, beside `adamw-tau bench --device cpu`:
// one pass that reads p, g, m, v and writes p, m, v (28 B/param, fp32) with trivial math (the
// shape of the bench's ceiling, csrc/stream_cpu.cpp); the same bytes in passes apart, a
// read-write pass over each of p, m, v and a read-only one over g (slower than the one pass:
// fewer streams in flight, adamw_tau/bench/ceiling.py); an in-place stream over 14 B/param
// (x *= c: the bench's roofline before, half reads); and a pass that only reads the four
// (16 B/param). GPT-2-124M's parameter count; 2 GB of arrays.
//   g++ -O3 -march=native -fopenmp bench/cpu_stream.cpp -o /tmp/cpu_stream && /tmp/cpu_stream
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <utility>

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
  auto report = [](const char* what, double bytes_per_param, double ms, long n) {
    std::printf("%-34s %5.1f B/param: %7.1f ms  %5.1f GB/s\n", what, bytes_per_param, ms, bytes_per_param * n / ms / 1e6);
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
    report("update (one pass)", 28, ms_since(t0), n);
  }
  for (int rep = 0; rep < 5; ++rep) {
    double ms = 0;
    for (float* x : {p, m, v}) {  // read-write: what the step reads and writes back
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for simd
      for (long i = 0; i < n; ++i) x[i] *= 1.0000001f;
      ms += ms_since(t0);
    }
    const auto t0 = std::chrono::steady_clock::now();
    float s = 0.0f;
#pragma omp parallel for simd reduction(+ : s)
    for (long i = 0; i < n; ++i) s += g[i];  // read-only: the gradient
    ms += ms_since(t0);
    report(s > 0 ? "rw p, m, v + ro g, passes apart" : "", 28, ms, n);
  }
  for (int rep = 0; rep < 5; ++rep) {
    // the same 28 B/param as one in-place stream over 14 B/param (p, m, v and half of g, read
    // and written back): half reads, where the update reads 16 for 12 written
    double ms = 0;
    for (auto [x, len] : {std::pair{p, n}, std::pair{m, n}, std::pair{v, n}, std::pair{g, n / 2}}) {
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for simd
      for (long i = 0; i < len; ++i) x[i] *= 1.0000001f;
      ms += ms_since(t0);
    }
    report("in-place stream (old roofline)", 28, ms, n);
  }
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    float s = 0.0f;
#pragma omp parallel for simd reduction(+ : s)
    for (long i = 0; i < n; ++i) s += p[i] + g[i] + m[i] + v[i];
    report(s > 0 ? "read p, g, m, v" : "", 16, ms_since(t0), n);
  }
}
