#!/usr/bin/env bash
# On a GPU machine, from a plain checkout (nothing installed from a registry): the GPU tests,
# the parity check and the benchmark, then a short table. Writes into ${OUT:-bench/out}.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  date -u +"date: %Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/device: /'
  python3 -c "import torch, triton; print(f'torch {torch.__version__}, triton {triton.__version__}, cuda {torch.version.cuda}')"
} | tee "$out/env.txt"
# --full: every cuda-marked test, the slow-marked ones too (tests/tiers.py)
python3 -m pytest -q --full -m "cuda" -p no:cacheprovider --continue-on-collection-errors tests 2>&1 | tee "$out/tests.txt" | tail -5
tests_rc=${PIPESTATUS[0]}
python3 -m adamw_tau.cli bench --no-progress --json "$out/bench.json" --plot "$out/bench.png" | tee "$out/bench.txt"
bench_rc=${PIPESTATUS[0]}
echo
echo "== summary =="
cat "$out/env.txt"
echo "cuda tests: $(tail -1 "$out/tests.txt") (exit $tests_rc)"
python3 - "$out/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{'workload':18} {'path':16} {'impl':15} {'ms':>9} {'% copy':>7} {'x fused':>8} {'b2b ms':>9} {'b2b %':>6} {'parity':>6}")
for row in r["rows"]:
    if row.get("error"):
        print(f"{row['workload']:18} {row['path']:16} {row['impl']:15} FAILED: {row['error']}")
        continue
    if row["ms"] is None:
        continue
    f = lambda v, fmt: format(v, fmt) if v is not None else "-"
    print(f"{row['workload']:18} {row['path']:16} {row['impl']:15} {f(row['ms'], '9.3f')} "
          f"{f(row['pct_copy'], '7.1f')} {f(row['speedup_vs_torch_fused'], '8.2f')} {f(row.get('ms_stream'), '9.3f')} "
          f"{f(row.get('pct_copy_stream'), '6.1f')} {f(row['parity_bits'], '6d')}")
for h in r.get("host_cost", []):
    label = h["impl"] + (", new grads" if h.get("new_grads") else "")
    print(f"host cost {label:27} {h['tensors']:5d} tensors " + (f"{h['ms']:.3f} ms" if h["ms"] else f"FAILED: {h['error']}"))
for c in r.get("clip", []):
    print(f"clip+step {c['workload']:18} {c['impl']:22} " + (f"{c['ms']:.3f} ms, host {c['host_ms']:.3f} ms, norm "
          f"{c['clip_norm_ulps']:.1f} ulp from torch's" if c.get("ms") else f"FAILED: {c['error']}"))
for c in r.get("client", []):
    ratio = f" = {c['vs_torch_fused']:.2f}x torch fused" if c.get("vs_torch_fused") else ""
    print(f"client step {c['impl']:15} " + (f"{c['ms']:.3f} ms{ratio}" if c["ms"] else f"FAILED: {c['error']}"))
print("parity failures:", r["parity_failures"] or "none")
print("failed rows:", r.get("failures") or "none")
PY
exit $(( tests_rc != 0 || bench_rc != 0 ))
