// The 8-bit blockwise state format (adamw_tau/formats/q8_blockwise.py, docs/numerics.md "8-bit
// states") for the C++ and CUDA kernels: its tables as fp32 words, the same words as the Python
// module's (tests/formats/test_q8_blockwise.py reads them from this file), and the per-element
// encode and decode. The block max is the kernel's: a loop on the CPU, a warp on CUDA.
#pragma once

#include <cstdint>
#include <type_traits>

#include "adamw_math.h"
#include "octave_search.h"

namespace adamw_tau {

constexpr int kQ8Block = 256;  // elements per scale

#define ADAMW_Q8_SIGNED_MAP \
  0xBF7E3333u, 0xBF7A999Au, 0xBF770000u, 0xBF736666u, 0xBF6FCCCDu, 0xBF6C3333u, 0xBF68999Au, 0xBF650000u, \
  0xBF616666u, 0xBF5DCCCDu, 0xBF5A3333u, 0xBF56999Au, 0xBF530000u, 0xBF4F6666u, 0xBF4BCCCDu, 0xBF483333u, \
  0xBF44999Au, 0xBF410000u, 0xBF3D6666u, 0xBF39CCCDu, 0xBF363334u, 0xBF32999Au, 0xBF2F0000u, 0xBF2B6666u, \
  0xBF27CCCDu, 0xBF243334u, 0xBF20999Au, 0xBF1D0000u, 0xBF196666u, 0xBF15CCCDu, 0xBF123334u, 0xBF0E999Au, \
  0xBF0B0000u, 0xBF076666u, 0xBF03CCCCu, 0xBF003333u, 0xBEF93332u, 0xBEF20000u, 0xBEEACCCCu, 0xBEE3999Au, \
  0xBEDC6666u, 0xBED53333u, 0xBECE0000u, 0xBEC6CCCCu, 0xBEBF999Au, 0xBEB86666u, 0xBEB13333u, 0xBEAA0000u, \
  0xBEA2CCCCu, 0xBE9B999Au, 0xBE946666u, 0xBE8D3334u, 0xBE860000u, 0xBE7D9999u, 0xBE6F3333u, 0xBE60CCCDu, \
  0xBE526666u, 0xBE440000u, 0xBE35999Au, 0xBE273333u, 0xBE18CCCDu, 0xBE0A6666u, 0xBDF80000u, 0xBDDB3334u, \
  0xBDC9EB85u, 0xBDC428F7u, 0xBDBE6667u, 0xBDB8A3D7u, 0xBDB2E148u, 0xBDAD1EB8u, 0xBDA75C2Au, 0xBDA1999Au, \
  0xBD9BD70Au, 0xBD96147Bu, 0xBD9051EBu, 0xBD8A8F5Du, 0xBD84CCCDu, 0xBD7E147Bu, 0xBD728F5Du, 0xBD670A3Du, \
  0xBD5B851Fu, 0xBD500000u, 0xBD447AE1u, 0xBD38F5C3u, 0xBD2D70A3u, 0xBD21EB85u, 0xBD166667u, 0xBD0AE148u, \
  0xBCFEB852u, 0xBCE7AE15u, 0xBCD0A3D7u, 0xBCB9999Au, 0xBCA28F5Du, 0xBC8B851Fu, 0xBC68F5C3u, 0xBC3AE148u, \
  0xBC1F3B64u, 0xBC160418u, 0xBC0CCCCDu, 0xBC039581u, 0xBBF4BC6Au, 0xBBE24DD3u, 0xBBCFDF3Bu, 0xBBBD70A4u, \
  0xBBAB020Du, 0xBB989374u, 0xBB8624DDu, 0xBB676C8Au, 0xBB428F5Cu, 0xBB1DB22Du, 0xBAF1A9FCu, 0xBAA7EF9Du, \
  0xBA7765FFu, 0xBA59E83Eu, 0xBA3C6A80u, 0xBA1EECC1u, 0xBA016F01u, 0xB9C7E283u, 0xB98CE705u, 0xB923D70Bu, \
  0xB8BA1F4Bu, 0xB88AEFB3u, 0xB8378034u, 0xB7B24206u, 0xB70205FFu, 0xB65A1A94u, 0xB513A3B7u, 0x00000000u, \
  0x3513A3B7u, 0x365A1A94u, 0x370205FFu, 0x37B24206u, 0x38378034u, 0x388AEFB3u, 0x38BA1F4Bu, 0x3923D70Bu, \
  0x398CE705u, 0x39C7E283u, 0x3A016F01u, 0x3A1EECC1u, 0x3A3C6A80u, 0x3A59E83Eu, 0x3A7765FFu, 0x3AA7EF9Du, \
  0x3AF1A9FCu, 0x3B1DB22Du, 0x3B428F5Cu, 0x3B676C8Au, 0x3B8624DDu, 0x3B989374u, 0x3BAB020Du, 0x3BBD70A4u, \
  0x3BCFDF3Bu, 0x3BE24DD3u, 0x3BF4BC6Au, 0x3C039581u, 0x3C0CCCCDu, 0x3C160418u, 0x3C1F3B64u, 0x3C3AE148u, \
  0x3C68F5C3u, 0x3C8B851Fu, 0x3CA28F5Du, 0x3CB9999Au, 0x3CD0A3D7u, 0x3CE7AE15u, 0x3CFEB852u, 0x3D0AE148u, \
  0x3D166667u, 0x3D21EB85u, 0x3D2D70A3u, 0x3D38F5C3u, 0x3D447AE1u, 0x3D500000u, 0x3D5B851Fu, 0x3D670A3Du, \
  0x3D728F5Du, 0x3D7E147Bu, 0x3D84CCCDu, 0x3D8A8F5Du, 0x3D9051EBu, 0x3D96147Bu, 0x3D9BD70Au, 0x3DA1999Au, \
  0x3DA75C2Au, 0x3DAD1EB8u, 0x3DB2E148u, 0x3DB8A3D7u, 0x3DBE6667u, 0x3DC428F7u, 0x3DC9EB85u, 0x3DDB3334u, \
  0x3DF80000u, 0x3E0A6666u, 0x3E18CCCDu, 0x3E273333u, 0x3E35999Au, 0x3E440000u, 0x3E526666u, 0x3E60CCCDu, \
  0x3E6F3333u, 0x3E7D9999u, 0x3E860000u, 0x3E8D3334u, 0x3E946666u, 0x3E9B999Au, 0x3EA2CCCCu, 0x3EAA0000u, \
  0x3EB13333u, 0x3EB86666u, 0x3EBF999Au, 0x3EC6CCCCu, 0x3ECE0000u, 0x3ED53333u, 0x3EDC6666u, 0x3EE3999Au, \
  0x3EEACCCCu, 0x3EF20000u, 0x3EF93332u, 0x3F003333u, 0x3F03CCCCu, 0x3F076666u, 0x3F0B0000u, 0x3F0E999Au, \
  0x3F123334u, 0x3F15CCCDu, 0x3F196666u, 0x3F1D0000u, 0x3F20999Au, 0x3F243334u, 0x3F27CCCDu, 0x3F2B6666u, \
  0x3F2F0000u, 0x3F32999Au, 0x3F363334u, 0x3F39CCCDu, 0x3F3D6666u, 0x3F410000u, 0x3F44999Au, 0x3F483333u, \
  0x3F4BCCCDu, 0x3F4F6666u, 0x3F530000u, 0x3F56999Au, 0x3F5A3333u, 0x3F5DCCCDu, 0x3F616666u, 0x3F650000u, \
  0x3F68999Au, 0x3F6C3333u, 0x3F6FCCCDu, 0x3F736666u, 0x3F770000u, 0x3F7A999Au, 0x3F7E3333u, 0x3F800000u

#define ADAMW_Q8_UNSIGNED_MAP \
  0x00000000u, 0x34AE7BAAu, 0x35500998u, 0x360E9B38u, 0x3692CCF6u, 0x36DE4C51u, 0x3714E5D5u, 0x3783126Eu, \
  0x37E171A0u, 0x381FE868u, 0x384F1800u, 0x387E479Au, 0x3896BB99u, 0x38AE5364u, 0x38C5EB31u, 0x3906594Bu, \
  0x394154CAu, 0x397C5049u, 0x399BA5E4u, 0x39B923A2u, 0x39D6A163u, 0x39F41F22u, 0x3A08CE71u, 0x3A178D50u, \
  0x3A264C30u, 0x3A350B10u, 0x3A43C9EFu, 0x3A5288D0u, 0x3A6147AFu, 0x3A70068Eu, 0x3A7EC56Eu, 0x3A958106u, \
  0x3ABA5E35u, 0x3ADF3B64u, 0x3B020C4Au, 0x3B147AE1u, 0x3B26E978u, 0x3B395810u, 0x3B4BC6A7u, 0x3B5E3540u, \
  0x3B70A3D7u, 0x3B818937u, 0x3B8AC082u, 0x3B93F7CFu, 0x3B9D2F1Au, 0x3BA66666u, 0x3BAF9DB2u, 0x3BB8D4FDu, \
  0x3BC20C4Au, 0x3BCB4395u, 0x3BD47AE1u, 0x3BDDB22Eu, 0x3BE6E978u, 0x3BF020C5u, 0x3BF9580Fu, 0x3C0147AEu, \
  0x3C05E354u, 0x3C0A7EF9u, 0x3C0F1AA0u, 0x3C13B645u, 0x3C1851EBu, 0x3C1CED92u, 0x3C218937u, 0x3C2F5C2Au, \
  0x3C466667u, 0x3C5D70A3u, 0x3C747AE2u, 0x3C85C28Fu, 0x3C9147AFu, 0x3C9CCCCDu, 0x3CA851EBu, 0x3CB3D70Bu, \
  0x3CBF5C29u, 0x3CCAE147u, 0x3CD66667u, 0x3CE1EB87u, 0x3CED70A3u, 0x3CF8F5C3u, 0x3D023D70u, 0x3D080000u, \
  0x3D0DC28Fu, 0x3D13851Fu, 0x3D1947AFu, 0x3D1F0A3Du, 0x3D24CCCDu, 0x3D2A8F5Cu, 0x3D3051EBu, 0x3D36147Bu, \
  0x3D3BD70Au, 0x3D41999Au, 0x3D475C28u, 0x3D4D1EB8u, 0x3D52E147u, 0x3D58A3D7u, 0x3D5E6667u, 0x3D6428F7u, \
  0x3D69EB87u, 0x3D6FAE15u, 0x3D7570A3u, 0x3D7B3333u, 0x3D807AE2u, 0x3D835C2Au, 0x3D863D71u, 0x3D891EB8u, \
  0x3D8C0000u, 0x3D8EE148u, 0x3D91C290u, 0x3D94A3D7u, 0x3D97851Fu, 0x3D9A6667u, 0x3D9D47AFu, 0x3DA028F6u, \
  0x3DA30A3Eu, 0x3DA5EB85u, 0x3DA8CCCDu, 0x3DABAE15u, 0x3DAE8F5Cu, 0x3DB170A4u, 0x3DB451EBu, 0x3DB73333u, \
  0x3DBA147Bu, 0x3DBCF5C3u, 0x3DBFD70Bu, 0x3DC2B852u, 0x3DC5999Au, 0x3DC87AE2u, 0x3DCB5C29u, 0x3DD40000u, \
  0x3DE26666u, 0x3DF0CCCDu, 0x3DFF3333u, 0x3E06CCCCu, 0x3E0E0000u, 0x3E153334u, 0x3E1C6666u, 0x3E23999Au, \
  0x3E2ACCCCu, 0x3E320000u, 0x3E393334u, 0x3E406666u, 0x3E47999Au, 0x3E4ECCCCu, 0x3E560000u, 0x3E5D3334u, \
  0x3E646666u, 0x3E6B999Au, 0x3E72CCCCu, 0x3E7A0000u, 0x3E809999u, 0x3E843333u, 0x3E87CCCDu, 0x3E8B6666u, \
  0x3E8F0000u, 0x3E92999Au, 0x3E963333u, 0x3E99CCCCu, 0x3E9D6666u, 0x3EA10000u, 0x3EA4999Au, 0x3EA83333u, \
  0x3EABCCCCu, 0x3EAF6666u, 0x3EB30000u, 0x3EB6999Au, 0x3EBA3333u, 0x3EBDCCCCu, 0x3EC16666u, 0x3EC50000u, \
  0x3EC8999Au, 0x3ECC3333u, 0x3ECFCCCCu, 0x3ED36666u, 0x3ED70000u, 0x3EDA999Au, 0x3EDE3333u, 0x3EE1CCCCu, \
  0x3EE56666u, 0x3EE90000u, 0x3EEC999Au, 0x3EF03333u, 0x3EF3CCCCu, 0x3EF76666u, 0x3EFB0000u, 0x3EFE9999u, \
  0x3F01199Au, 0x3F02E666u, 0x3F04B333u, 0x3F068000u, 0x3F084CCCu, 0x3F0A199Au, 0x3F0BE666u, 0x3F0DB334u, \
  0x3F0F8000u, 0x3F114CCDu, 0x3F13199Au, 0x3F14E666u, 0x3F16B334u, 0x3F188000u, 0x3F1A4CCDu, 0x3F1C199Au, \
  0x3F1DE666u, 0x3F1FB334u, 0x3F218000u, 0x3F234CCDu, 0x3F25199Au, 0x3F26E666u, 0x3F28B334u, 0x3F2A8000u, \
  0x3F2C4CCDu, 0x3F2E199Au, 0x3F2FE666u, 0x3F31B334u, 0x3F338000u, 0x3F354CCDu, 0x3F37199Au, 0x3F38E666u, \
  0x3F3AB334u, 0x3F3C8000u, 0x3F3E4CCDu, 0x3F40199Au, 0x3F41E666u, 0x3F43B334u, 0x3F458000u, 0x3F474CCCu, \
  0x3F49199Au, 0x3F4AE666u, 0x3F4CB334u, 0x3F4E8000u, 0x3F504CCCu, 0x3F52199Au, 0x3F53E666u, 0x3F55B334u, \
  0x3F578000u, 0x3F594CCCu, 0x3F5B199Au, 0x3F5CE666u, 0x3F5EB334u, 0x3F608000u, 0x3F624CCCu, 0x3F64199Au, \
  0x3F65E666u, 0x3F67B334u, 0x3F698000u, 0x3F6B4CCCu, 0x3F6D199Au, 0x3F6EE666u, 0x3F70B334u, 0x3F728000u, \
  0x3F744CCCu, 0x3F76199Au, 0x3F77E666u, 0x3F79B334u, 0x3F7B8000u, 0x3F7D4CCCu, 0x3F7F199Au, 0x3F800000u

#define ADAMW_Q8_SIGNED_THRESHOLDS \
  0xBF7C6667u, 0xBF78CCCDu, 0xBF753333u, 0xBF71999Au, 0xBF6E0000u, 0xBF6A6667u, 0xBF66CCCDu, 0xBF633333u, \
  0xBF5F999Au, 0xBF5C0000u, 0xBF586667u, 0xBF54CCCDu, 0xBF513333u, 0xBF4D999Au, 0xBF4A0000u, 0xBF466667u, \
  0xBF42CCCDu, 0xBF3F3333u, 0xBF3B999Au, 0xBF380001u, 0xBF346667u, 0xBF30CCCDu, 0xBF2D3333u, 0xBF29999Au, \
  0xBF260001u, 0xBF226667u, 0xBF1ECCCDu, 0xBF1B3333u, 0xBF17999Au, 0xBF140001u, 0xBF106667u, 0xBF0CCCCDu, \
  0xBF093333u, 0xBF059999u, 0xBF020000u, 0xBEFCCCCCu, 0xBEF59999u, 0xBEEE6666u, 0xBEE73333u, 0xBEE00000u, \
  0xBED8CCCDu, 0xBED1999Au, 0xBECA6666u, 0xBEC33333u, 0xBEBC0000u, 0xBEB4CCCDu, 0xBEAD999Au, 0xBEA66666u, \
  0xBE9F3333u, 0xBE980000u, 0xBE90CCCDu, 0xBE89999Au, 0xBE826667u, 0xBE766666u, 0xBE680000u, 0xBE59999Au, \
  0xBE4B3333u, 0xBE3CCCCDu, 0xBE2E6667u, 0xBE200000u, 0xBE11999Au, 0xBE033333u, 0xBDE9999Au, 0xBDD28F5Du, \
  0xBDC70A3Eu, 0xBDC147AFu, 0xBDBB851Fu, 0xBDB5C290u, 0xBDB00000u, 0xBDAA3D71u, 0xBDA47AE2u, 0xBD9EB852u, \
  0xBD98F5C3u, 0xBD933333u, 0xBD8D70A4u, 0xBD87AE15u, 0xBD81EB86u, 0xBD7851ECu, 0xBD6CCCCDu, 0xBD6147AEu, \
  0xBD55C290u, 0xBD4A3D71u, 0xBD3EB852u, 0xBD333333u, 0xBD27AE14u, 0xBD1C28F6u, 0xBD10A3D8u, 0xBD051EB9u, \
  0xBCF33334u, 0xBCDC28F6u, 0xBCC51EB9u, 0xBCAE147Cu, 0xBC970A3Eu, 0xBC800001u, 0xBC51EB86u, 0xBC2D0E56u, \
  0xBC1A9FBEu, 0xBC116873u, 0xBC083127u, 0xBBFDF3B6u, 0xBBEB851Fu, 0xBBD91687u, 0xBBC6A7F0u, 0xBBB43959u, \
  0xBBA1CAC1u, 0xBB8F5C29u, 0xBB79DB22u, 0xBB54FDF3u, 0xBB3020C5u, 0xBB0B4396u, 0xBACCCCCDu, 0xBA91D14Fu, \
  0xBA68A71Fu, 0xBA4B295Fu, 0xBA2DABA1u, 0xBA102DE1u, 0xB9E56043u, 0xB9AA64C4u, 0xB95ED28Bu, 0xB9007359u, \
  0xB8A2877Fu, 0xB866AFCDu, 0xB808509Cu, 0xB7734506u, 0xB6B88CA4u, 0xB5FF0382u, 0x80000001u, 0x00000000u, \
  0x35FF0381u, 0x36B88CA4u, 0x37734505u, 0x3808509Bu, 0x3866AFCDu, 0x38A2877Fu, 0x39007358u, 0x395ED28Au, \
  0x39AA64C4u, 0x39E56042u, 0x3A102DE1u, 0x3A2DABA0u, 0x3A4B295Fu, 0x3A68A71Eu, 0x3A91D14Eu, 0x3ACCCCCCu, \
  0x3B0B4395u, 0x3B3020C4u, 0x3B54FDF3u, 0x3B79DB22u, 0x3B8F5C28u, 0x3BA1CAC0u, 0x3BB43958u, 0x3BC6A7EFu, \
  0x3BD91687u, 0x3BEB851Eu, 0x3BFDF3B6u, 0x3C083127u, 0x3C116872u, 0x3C1A9FBEu, 0x3C2D0E56u, 0x3C51EB85u, \
  0x3C800000u, 0x3C970A3Eu, 0x3CAE147Bu, 0x3CC51EB8u, 0x3CDC28F6u, 0x3CF33333u, 0x3D051EB8u, 0x3D10A3D7u, \
  0x3D1C28F6u, 0x3D27AE14u, 0x3D333333u, 0x3D3EB852u, 0x3D4A3D70u, 0x3D55C28Fu, 0x3D6147AEu, 0x3D6CCCCDu, \
  0x3D7851ECu, 0x3D81EB85u, 0x3D87AE15u, 0x3D8D70A4u, 0x3D933333u, 0x3D98F5C2u, 0x3D9EB852u, 0x3DA47AE2u, \
  0x3DAA3D71u, 0x3DB00000u, 0x3DB5C28Fu, 0x3DBB851Fu, 0x3DC147AFu, 0x3DC70A3Eu, 0x3DD28F5Cu, 0x3DE9999Au, \
  0x3E033333u, 0x3E119999u, 0x3E200000u, 0x3E2E6666u, 0x3E3CCCCDu, 0x3E4B3333u, 0x3E599999u, 0x3E680000u, \
  0x3E766666u, 0x3E826666u, 0x3E89999Au, 0x3E90CCCDu, 0x3E980000u, 0x3E9F3333u, 0x3EA66666u, 0x3EAD9999u, \
  0x3EB4CCCCu, 0x3EBC0000u, 0x3EC33333u, 0x3ECA6666u, 0x3ED19999u, 0x3ED8CCCCu, 0x3EE00000u, 0x3EE73333u, \
  0x3EEE6666u, 0x3EF59999u, 0x3EFCCCCCu, 0x3F01FFFFu, 0x3F059999u, 0x3F093333u, 0x3F0CCCCDu, 0x3F106667u, \
  0x3F140000u, 0x3F179999u, 0x3F1B3333u, 0x3F1ECCCDu, 0x3F226667u, 0x3F260000u, 0x3F299999u, 0x3F2D3333u, \
  0x3F30CCCDu, 0x3F346667u, 0x3F380000u, 0x3F3B9999u, 0x3F3F3333u, 0x3F42CCCDu, 0x3F466666u, 0x3F4A0000u, \
  0x3F4D9999u, 0x3F513333u, 0x3F54CCCDu, 0x3F586666u, 0x3F5C0000u, 0x3F5F9999u, 0x3F633333u, 0x3F66CCCDu, \
  0x3F6A6666u, 0x3F6E0000u, 0x3F719999u, 0x3F753333u, 0x3F78CCCDu, 0x3F7C6666u, 0x3F7F1999u

#define ADAMW_Q8_UNSIGNED_THRESHOLDS \
  0x00000000u, 0x3513A3B6u, 0x35C29D9Eu, 0x365A1A92u, 0x36B88CA3u, 0x370205FEu, 0x374D8558u, 0x37B24207u, \
  0x3808509Cu, 0x38378034u, 0x3866AFCDu, 0x388AEFB3u, 0x38A2877Eu, 0x38BA1F4Au, 0x38E94EE3u, 0x3923D70Au, \
  0x395ED289u, 0x398CE704u, 0x39AA64C3u, 0x39C7E282u, 0x39E56042u, 0x3A016F01u, 0x3A102DE0u, 0x3A1EECC0u, \
  0x3A2DABA0u, 0x3A3C6A7Fu, 0x3A4B295Fu, 0x3A59E83Fu, 0x3A68A71Eu, 0x3A7765FEu, 0x3A8A71DEu, 0x3AA7EF9Du, \
  0x3ACCCCCCu, 0x3AF1A9FCu, 0x3B0B4395u, 0x3B1DB22Cu, 0x3B3020C4u, 0x3B428F5Bu, 0x3B54FDF3u, 0x3B676C8Bu, \
  0x3B79DB22u, 0x3B8624DCu, 0x3B8F5C28u, 0x3B989374u, 0x3BA1CAC0u, 0x3BAB020Cu, 0x3BB43957u, 0x3BBD70A3u, \
  0x3BC6A7EFu, 0x3BCFDF3Bu, 0x3BD91687u, 0x3BE24DD3u, 0x3BEB851Eu, 0x3BF4BC6Au, 0x3BFDF3B5u, 0x3C039581u, \
  0x3C083126u, 0x3C0CCCCCu, 0x3C116872u, 0x3C160418u, 0x3C1A9FBEu, 0x3C1F3B64u, 0x3C2872B0u, 0x3C3AE148u, \
  0x3C51EB85u, 0x3C68F5C2u, 0x3C800000u, 0x3C8B851Fu, 0x3C970A3Eu, 0x3CA28F5Cu, 0x3CAE147Bu, 0x3CB9999Au, \
  0x3CC51EB8u, 0x3CD0A3D7u, 0x3CDC28F7u, 0x3CE7AE15u, 0x3CF33333u, 0x3CFEB851u, 0x3D051EB8u, 0x3D0AE147u, \
  0x3D10A3D7u, 0x3D166667u, 0x3D1C28F6u, 0x3D21EB85u, 0x3D27AE14u, 0x3D2D70A3u, 0x3D333333u, 0x3D38F5C2u, \
  0x3D3EB852u, 0x3D447AE1u, 0x3D4A3D70u, 0x3D4FFFFFu, 0x3D55C28Fu, 0x3D5B851Fu, 0x3D6147AFu, 0x3D670A3Fu, \
  0x3D6CCCCEu, 0x3D728F5Cu, 0x3D7851EBu, 0x3D7E147Bu, 0x3D81EB86u, 0x3D84CCCDu, 0x3D87AE14u, 0x3D8A8F5Cu, \
  0x3D8D70A4u, 0x3D9051ECu, 0x3D933333u, 0x3D96147Bu, 0x3D98F5C3u, 0x3D9BD70Bu, 0x3D9EB852u, 0x3DA1999Au, \
  0x3DA47AE1u, 0x3DA75C29u, 0x3DAA3D71u, 0x3DAD1EB8u, 0x3DB00000u, 0x3DB2E147u, 0x3DB5C28Fu, 0x3DB8A3D7u, \
  0x3DBB851Fu, 0x3DBE6667u, 0x3DC147AEu, 0x3DC428F6u, 0x3DC70A3Eu, 0x3DC9EB85u, 0x3DCFAE14u, 0x3DDB3333u, \
  0x3DE99999u, 0x3DF80000u, 0x3E033332u, 0x3E0A6666u, 0x3E11999Au, 0x3E18CCCDu, 0x3E200000u, 0x3E273333u, \
  0x3E2E6666u, 0x3E35999Au, 0x3E3CCCCDu, 0x3E440000u, 0x3E4B3333u, 0x3E526666u, 0x3E59999Au, 0x3E60CCCDu, \
  0x3E680000u, 0x3E6F3333u, 0x3E766666u, 0x3E7D9999u, 0x3E826666u, 0x3E860000u, 0x3E899999u, 0x3E8D3333u, \
  0x3E90CCCDu, 0x3E946666u, 0x3E97FFFFu, 0x3E9B9999u, 0x3E9F3333u, 0x3EA2CCCDu, 0x3EA66666u, 0x3EA9FFFFu, \
  0x3EAD9999u, 0x3EB13333u, 0x3EB4CCCDu, 0x3EB86666u, 0x3EBBFFFFu, 0x3EBF9999u, 0x3EC33333u, 0x3EC6CCCDu, \
  0x3ECA6666u, 0x3ECDFFFFu, 0x3ED19999u, 0x3ED53333u, 0x3ED8CCCDu, 0x3EDC6666u, 0x3EDFFFFFu, 0x3EE39999u, \
  0x3EE73333u, 0x3EEACCCDu, 0x3EEE6666u, 0x3EF1FFFFu, 0x3EF59999u, 0x3EF93333u, 0x3EFCCCCCu, 0x3F003333u, \
  0x3F020000u, 0x3F03CCCCu, 0x3F059999u, 0x3F076666u, 0x3F093333u, 0x3F0B0000u, 0x3F0CCCCDu, 0x3F0E999Au, \
  0x3F106666u, 0x3F123333u, 0x3F140000u, 0x3F15CCCDu, 0x3F17999Au, 0x3F196666u, 0x3F1B3333u, 0x3F1D0000u, \
  0x3F1ECCCDu, 0x3F20999Au, 0x3F226666u, 0x3F243333u, 0x3F260000u, 0x3F27CCCDu, 0x3F29999Au, 0x3F2B6666u, \
  0x3F2D3333u, 0x3F2F0000u, 0x3F30CCCDu, 0x3F32999Au, 0x3F346666u, 0x3F363333u, 0x3F380000u, 0x3F39CCCDu, \
  0x3F3B999Au, 0x3F3D6666u, 0x3F3F3333u, 0x3F410000u, 0x3F42CCCDu, 0x3F44999Au, 0x3F466666u, 0x3F483333u, \
  0x3F4A0000u, 0x3F4BCCCDu, 0x3F4D999Au, 0x3F4F6666u, 0x3F513333u, 0x3F530000u, 0x3F54CCCDu, 0x3F56999Au, \
  0x3F586666u, 0x3F5A3333u, 0x3F5C0000u, 0x3F5DCCCDu, 0x3F5F999Au, 0x3F616666u, 0x3F633333u, 0x3F650000u, \
  0x3F66CCCDu, 0x3F68999Au, 0x3F6A6666u, 0x3F6C3333u, 0x3F6E0000u, 0x3F6FCCCDu, 0x3F71999Au, 0x3F736666u, \
  0x3F753333u, 0x3F770000u, 0x3F78CCCDu, 0x3F7A999Au, 0x3F7C6666u, 0x3F7E3333u, 0x3F7F8CCDu

// [note: where the tables live] The CPU reads host arrays. A CUDA kernel reads __device__ copies
// in global memory, through the read-only cache: each lane looks up its own entry, and the
// constant cache would serialise a warp's 32 different addresses.
inline constexpr uint32_t kQ8SignedMap[256] = {ADAMW_Q8_SIGNED_MAP};
inline constexpr uint32_t kQ8UnsignedMap[256] = {ADAMW_Q8_UNSIGNED_MAP};
inline constexpr uint32_t kQ8SignedThresholds[255] = {ADAMW_Q8_SIGNED_THRESHOLDS};
inline constexpr uint32_t kQ8UnsignedThresholds[255] = {ADAMW_Q8_UNSIGNED_THRESHOLDS};
#if defined(__CUDACC__)
__device__ const uint32_t kQ8SignedMapDevice[256] = {ADAMW_Q8_SIGNED_MAP};
__device__ const uint32_t kQ8UnsignedMapDevice[256] = {ADAMW_Q8_UNSIGNED_MAP};
__device__ const uint32_t kQ8SignedThresholdsDevice[255] = {ADAMW_Q8_SIGNED_THRESHOLDS};
__device__ const uint32_t kQ8UnsignedThresholdsDevice[255] = {ADAMW_Q8_UNSIGNED_THRESHOLDS};
#endif

template <bool SIGNED> ADAMW_HD float q8_map(uint32_t code) {
#if defined(__CUDA_ARCH__)
  return as_float(__ldg(SIGNED ? &kQ8SignedMapDevice[code] : &kQ8UnsignedMapDevice[code]));
#else
  return as_float(SIGNED ? kQ8SignedMap[code] : kQ8UnsignedMap[code]);
#endif
}

template <bool SIGNED> ADAMW_HD float q8_threshold(uint32_t k) {
#if defined(__CUDA_ARCH__)
  return as_float(__ldg(SIGNED ? &kQ8SignedThresholdsDevice[k] : &kQ8UnsignedThresholdsDevice[k]));
#else
  return as_float(SIGNED ? kQ8SignedThresholds[k] : kQ8UnsignedThresholds[k]);
#endif
}

// max(a, b) for block maxima of |x| (never negative): a NaN on either side propagates.
ADAMW_HD float q8_max(float a, float b) { return (a != a || a > b) ? a : b; }

// |x| on the bits: no sign, NaN stays NaN.
ADAMW_HD float q8_abs(float x) { return as_float(as_bits(x) & 0x7FFFFFFFu); }

// decode: map[code] * scale, one correctly rounded multiply.
template <bool SIGNED> ADAMW_HD float q8_decode(uint8_t code, float scale) { return mul(q8_map<SIGNED>(code), scale); }

// The first unsigned code that does not decode to 0 at this scale, #{k < 255 : map[k] * scale
// == 0}, by the same binary search (the products ascend): 1 at a normal scale, more at a
// subnormal one, 0 at an inf or NaN scale. A block's positive squares take at least this code.
ADAMW_HD uint32_t q8_lowest_positive(float scale) {
  uint32_t code = 0;
#pragma unroll
  for (uint32_t bit = 128; bit != 0; bit >>= 1) code += uint32_t(q8_decode<false>(code + bit - 1, scale) == 0.0f) * bit;
  return code;
}

// encode: x̂ = x / scale (x when the scale is 0), then #{k : x̂ > T[k]} by a branch-free binary
// search over the ascending thresholds: 8 comparisons give the same count as 255 (a NaN x̂ is
// greater than none of them: code 0). The comparison is added as 0 or 1 times the step, not
// chosen by `?:`: g++ made that a branch, mispredicted on half the steps (70 ns an element on
// the 2-core CPU machine against 18). ``lowest``: the unsigned map's zero rule, a positive x
// takes at least that code (q8_lowest_positive of the scale; 0 for the signed map).
ADAMW_HD float q8_xhat(float x, float scale) { return div(x, scale == 0.0f ? 1.0f : scale); }
ADAMW_HD uint8_t q8_floored(uint32_t code, float x, uint32_t lowest) {
  const uint32_t floor = x > 0.0f ? lowest : 0u;
  return uint8_t(code < floor ? floor : code);
}
template <bool SIGNED> ADAMW_HD uint8_t q8_encode(float x, float scale, uint32_t lowest = 0) {
  const float xhat = q8_xhat(x, scale);
  uint32_t code = 0;
#pragma unroll
  for (uint32_t bit = 128; bit != 0; bit >>= 1) code += uint32_t(xhat > q8_threshold<SIGNED>(code + bit - 1)) * bit;
  return q8_floored(code, x, lowest);
}

// [note: the kernel's search] The CUDA kernel counts thresholds by the octave search
// (octave_search.h: OctaveSearch::count, three dependent loads from 1792 bytes of tables a map
// instead of the binary search's eight from the threshold table), the tables staged in shared
// memory once per thread block (adamw_quant_kernel.h: stage_search_tables). The same count as
// q8_encode's search for every fp32 pattern: tests/formats/test_bucket_search.py checks
// OctaveSearch::count against it over all 2^32 (full tier), and the host build of the kernel
// runs this very function. NOT MEASURED ON A GPU against the binary search.
using Q8SignedSearch = OctaveSearch<kQ8SignedThresholds, 255>;
using Q8UnsignedSearch = OctaveSearch<kQ8UnsignedThresholds, 255>;
struct Q8SearchTables {
  OctaveTables map[2];  // [0] the signed map's, [1] the unsigned's
};
inline constexpr Q8SearchTables kQ8SearchTables = {{Q8SignedSearch::kTables.core, Q8UnsignedSearch::kTables.core}};
#if defined(__CUDACC__)
__device__ const Q8SearchTables kQ8SearchTablesDevice = kQ8SearchTables;
#endif

// The zero rule that ties m to v: exp_avg's code is the zero code wherever the second moment
// the next step divides by (exp_avg_sq, or max_exp_avg_sq with amsgrad) has code 0.
ADAMW_HD uint8_t q8_zero_rule(uint8_t m_code, uint8_t v_code) { return v_code == 0 ? uint8_t(127) : m_code; }

// The 8-bit format as a codec: the interface every blockwise format gives the kernels
// (state_formats.h: CodecOf), so that the CPU loop (adamw_quant_cpu.h) and the CUDA kernel
// (adamw_quant_kernel.h) are written once for all of them: its block, how many codes a byte
// holds, a code's load (code_at) and a byte's store (store), decode, the lowest positive code,
// encode, and the zero rule that ties m to v.
struct Q8Codec {
  static constexpr int kBlock = kQ8Block;
  static constexpr int kCodesPerByte = 1;
  static constexpr int kCodes = 256;  // the map's entries
  template <class T> ADAMW_HD static void store(uint8_t* dst, int64_t i, const T* codes, int64_t) {
    dst[i] = uint8_t(codes[0]);
  }
  ADAMW_HD static uint32_t code_at(const uint8_t* c, int64_t i) { return c[i]; }
  template <bool SIGNED> ADAMW_HD static float decode(uint32_t code, float scale) { return q8_decode<SIGNED>(uint8_t(code), scale); }
  ADAMW_HD static uint32_t lowest_positive(float scale) { return q8_lowest_positive(scale); }
  template <bool SIGNED> ADAMW_HD static uint32_t encode(float x, float scale, uint32_t lowest = 0) {
    return q8_encode<SIGNED>(x, scale, lowest);
  }
  // encode's code, counted by the kernel's search over tables laid out as kSearchTables (the
  // host's, or the CUDA kernel's shared-memory copy of kSearchTablesDevice): [note: the
  // kernel's search]
  using SearchTables = Q8SearchTables;
  static constexpr const SearchTables& kSearchTables = kQ8SearchTables;
#if defined(__CUDACC__)
  __device__ static const SearchTables* search_tables_device() { return &kQ8SearchTablesDevice; }
#endif
  template <bool SIGNED>
  ADAMW_HD static uint32_t encode_with(float x, float scale, uint32_t lowest, const SearchTables& t) {
    using S = std::conditional_t<SIGNED, Q8SignedSearch, Q8UnsignedSearch>;
    return q8_floored(S::count(q8_xhat(x, scale), t.map[SIGNED ? 0 : 1]), x, lowest);
  }
  // exp_avg's code given the second moment's: the zero code where its code is 0
  ADAMW_HD static uint32_t zero_rule(uint32_t m_code, uint32_t v_code, float) {
    return q8_zero_rule(uint8_t(m_code), uint8_t(v_code));
  }
};

}  // namespace adamw_tau
