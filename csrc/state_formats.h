// The quantized state formats the kernels know, by their Kind (adamw_math.h; the ids of
// adamw_tau/formats/registry.py): each Kind's codec, which gives the CPU loop
// (adamw_quant_cpu.h) and the CUDA kernel (adamw_quant_kernel.h) everything format-specific
// (Q8Codec in q8_blockwise.h describes the interface). A new blockwise format adds its header
// here and one line to the map.
#pragma once

#include "adamw_math.h"
#include "q4_blockwise.h"
#include "q8_blockwise.h"

namespace adamw_tau {

// Every blockwise format's block divides it; the launcher refuses quantized launches whose
// chunk is not a multiple (launch.tables.QUANT_CHUNK_MULTIPLE), so a block never crosses two.
constexpr int kQuantChunkMultiple = 256;

template <Kind K> struct CodecOf;
template <> struct CodecOf<Kind::Q8> { using type = Q8Codec; };
template <> struct CodecOf<Kind::Q4> { using type = Q4Codec; };

}  // namespace adamw_tau
