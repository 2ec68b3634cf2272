// adamw_tau::stream_pass: the bench's CPU ceiling (adamw_tau/bench/ceiling.py, [note: the CPU
// ceiling]): one pass over byte buffers the way the CPU op steps a bucket -- at::parallel_for
// over blocks of kStreamBlock parameter elements, each block touching its share of every
// buffer at once -- with no math: each read-write buffer is read and written back (xor with a
// runtime 0), each read-only one read (xor-summed), each write-only one written. Not part of
// the optimizer; the bench times it beside the step on the same bytes and threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

namespace adamw_tau {
namespace {

constexpr int64_t kStreamBlock = 4096;        // parameter elements a block: the op's chunk (tables.CHUNK)
constexpr int64_t kStreamGrain = 1 << 15;     // elements a thread task at the least: the op's kGrain
// A block moves its share of the buffers in kPieces rounds, each round a piece of every buffer
// (2 KB of an fp32 one), so that all the step's streams are in flight at once, as in the step's
// element loop. Measured on GPT-2 fp32 (2-core machine, loaded): buffer after buffer, 16 KB
// each, the pass took 200 ms where the step took 160; 64 rounds (256-byte pieces) 111-135 ms
// against 124-150, and 149 ms for the 8-bit path's 16 B/param (the rounds' overhead); 8 rounds
// 84-86 ms against the step's 92-93 and 47 ms for 8-bit.
constexpr int64_t kPieces = 8;

struct Span {
  uint8_t* data;
  int64_t bytes;
};

std::vector<Span> spans(const std::vector<at::Tensor>& ts, const char* what) {
  std::vector<Span> out;
  for (const auto& t : ts) {
    TORCH_CHECK(t.is_cpu() && t.scalar_type() == at::kByte && t.is_contiguous(), "adamw_tau: stream_pass takes "
                "contiguous uint8 CPU buffers; a ", what, " buffer is ", t.scalar_type(), " on ", t.device());
    out.push_back({t.data_ptr<uint8_t>(), t.numel()});
  }
  return out;
}

// bytes [lo, hi) of a buffer for piece k of n, on 64-byte lines
inline void share(const Span& s, int64_t k, int64_t n, int64_t& lo, int64_t& hi) {
  lo = k == 0 ? 0 : (s.bytes * k / n) & ~int64_t(63);
  hi = k + 1 == n ? s.bytes : (s.bytes * (k + 1) / n) & ~int64_t(63);
}

int64_t stream_pass(const std::vector<at::Tensor>& rw, const std::vector<at::Tensor>& ro,
                    const std::vector<at::Tensor>& wo, int64_t numel, int64_t key) {
  const auto a = spans(rw, "read-write"), b = spans(ro, "read-only"), c = spans(wo, "write-only");
  TORCH_CHECK(numel > 0, "adamw_tau: stream_pass needs the parameter count the buffers belong to");
  const int64_t n_blocks = (numel + kStreamBlock - 1) / kStreamBlock;
  const int64_t n_pieces = n_blocks * kPieces;
  const uint8_t k8 = uint8_t(key);
  std::vector<int64_t> sums(at::get_num_threads() + 1, 0);
  at::parallel_for(0, n_blocks, std::max<int64_t>(1, kStreamGrain / kStreamBlock), [&](int64_t begin, int64_t end) {
    // local __restrict__ pointers and lengths: through a plain uint8_t* every store may alias the
    // spans and bounds, and g++ reloaded them each byte instead of vectorising (the pass ran at
    // a tenth of the step's speed on GPT-2, measured on the 2-core machine)
    const uint8_t key8 = k8;  // a local: the captured reference is a uint8_t that every store may alias
    uint8_t acc = 0;
    for (int64_t k = begin * kPieces; k < end * kPieces; ++k) {
      int64_t lo, hi;
      for (const Span& s : a) {
        share(s, k, n_pieces, lo, hi);
        uint8_t* __restrict__ d = s.data + lo;
        const int64_t len = hi - lo;
        for (int64_t i = 0; i < len; ++i) d[i] ^= key8;
      }
      for (const Span& s : b) {
        share(s, k, n_pieces, lo, hi);
        const uint8_t* __restrict__ d = s.data + lo;
        const int64_t len = hi - lo;
        uint8_t x = 0;
        for (int64_t i = 0; i < len; ++i) x ^= d[i];
        acc ^= x;
      }
      for (const Span& s : c) {
        share(s, k, n_pieces, lo, hi);
        uint8_t* __restrict__ d = s.data + lo;
        const int64_t len = hi - lo;
        for (int64_t i = 0; i < len; ++i) d[i] = key8;
      }
    }
    sums[at::get_thread_num()] ^= acc;
  });
  int64_t out = 0;
  for (int64_t s : sums) out ^= s;
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(adamw_tau, m) {
  m.def("stream_pass(Tensor[] rw, Tensor[] ro, Tensor[] wo, int numel, int key) -> int", &stream_pass);
}

}  // namespace adamw_tau
