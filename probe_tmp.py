import statistics, time, torch, triton, triton.testing
from adamw_tau import AdamWTau, tables
from adamw_tau.triton_kernels import adamw_fused as af
from adamw_tau.bench import _model, make_optimizer, bytes_per_element
from adamw_tau.testing import PATHS
dev = "cuda"; n = 1 << 28
print("Triton (chunk, num_warps) sweep, do_bench of step(), % of a copy of the same bytes", flush=True)
copies = {}
for pname in ("fp32", "bf16_states", "bf16_master"):
    nbytes = n * bytes_per_element(PATHS[pname])
    src = torch.empty(nbytes // 8, device=dev); dst = torch.empty_like(src)
    copies[pname] = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300)
    del src, dst
for chunk, warps in [(2048, 4), (2048, 8), (4096, 4), (4096, 8), (4096, 16), (8192, 8), (8192, 16), (16384, 16)]:
    tables.TablePlanner.__init__.__defaults__ = (chunk,)
    af.CHUNK, af.NUM_WARPS = chunk, warps
    row = []
    for pname in ("fp32", "bf16_states", "bf16_master"):
        ps = _model([(n,)], PATHS[pname], dev); opt = make_optimizer("ours:triton", ps, PATHS[pname])
        t = triton.testing.do_bench(opt.step, warmup=30, rep=200)
        row.append(f"{pname} {100 * copies[pname] / t:.1f}%")
        del opt, ps; torch.cuda.empty_cache()
    print(f"chunk {chunk:6d} warps {warps:2d}: " + "  ".join(row), flush=True)
tables.TablePlanner.__init__.__defaults__ = (4096,); af.CHUNK, af.NUM_WARPS = 4096, 8
def host_ms(make, k, reps=300):
    ps = [torch.nn.Parameter(torch.randn(16, device=dev)) for _ in range(k)]
    for p in ps: p.grad = torch.randn(16, device=dev)
    opt = make(ps)
    for _ in range(5): opt.step()
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize(); t0 = time.perf_counter(); opt.step(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3
for name, make in {"torch fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.1, fused=True),
                   "ours triton": lambda ps: AdamWTau(ps, lr=1e-3, tau_iters=1000.0, backend="triton"),
                   "ours cuda": lambda ps: AdamWTau(ps, lr=1e-3, tau_iters=1000.0, backend="cuda")}.items():
    print(f"host cost {name:12} 1 tensor {host_ms(make, 1):.3f} ms   2000 tensors {host_ms(make, 2000, 60):.3f} ms", flush=True)
