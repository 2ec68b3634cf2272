import fcntl
import os

import pytest
import torch

# [note: TRITON_INTERPRET] Without a GPU, Triton kernels can only run in its interpreter (NumPy
# on the CPU, IEEE fp32). It must be set before any kernel module is imported (triton.jit reads
# it at decoration time), so it is set here. Any other value on such a machine is refused:
# honouring it would skip every Triton test quietly (or crash them), and overriding it would
# run something other than what was asked for.
if not torch.cuda.is_available():
    _interpret = os.environ.get("TRITON_INTERPRET")
    if _interpret not in (None, "1"):
        raise pytest.UsageError(
            f"TRITON_INTERPRET={_interpret!r}, but this machine has no GPU: Triton runs here only in its "
            "interpreter. Unset TRITON_INTERPRET or set it to 1.")
    os.environ["TRITON_INTERPRET"] = "1"

from adamw_tau.testing.parity import hard_values  # noqa: E402,F401  (re-exported for tests)


@pytest.fixture(scope="session")
def host_body_library(tmp_path_factory):
    """The CUDA kernel body built for the host (adamw_tau/testing/host_body.py), once per run:
    every test that runs it shares this build, and so do the run's pytest-xdist workers (the
    first to get here builds under a lock in the run's common temporary folder, the others
    wait for it and load the same library)."""
    from adamw_tau.testing import host_body
    # a worker's base folder is inside the run's own (the one folder its workers share); without
    # xdist the base folder is the run's own
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    folder = shared / "host_body"
    folder.mkdir(exist_ok=True)
    with open(shared / "host_body.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = folder / "kernel_body_host.so"
        return built if built.exists() else host_body.build(folder)


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """A test that changes torch's thread count must set it back: the matmuls of every later
    test (the 2-process runs' one-process baselines among them) reduce in another order."""
    threads = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == threads, f"the test left torch's thread count at {torch.get_num_threads()}"


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="the full tier: run the tests marked slow too (CI runs it; tests/tiers.py)")


def pytest_collection_modifyitems(config, items):
    # [note: tiers] Without --full the slow-marked tests are deselected, not skipped: a skip would
    # read as a test that could not run, and "N deselected" says plainly that the fast tier left
    # them out. `-m` still works on top (e.g. `--full -m slow`: only what the fast tier leaves out).
    if not config.getoption("--full"):
        fast = [item for item in items if "slow" not in item.keywords]
        if len(fast) != len(items):
            config.hook.pytest_deselected(items=[item for item in items if "slow" in item.keywords])
            items[:] = fast
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
