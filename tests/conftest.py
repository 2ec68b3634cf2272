import fcntl
import os
import sys

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
def built_once(tmp_path_factory):
    """``built_once(name, make)``: ``make(folder)`` run once per test run, its result (a path)
    shared by every test and by the run's pytest-xdist workers. The first worker to ask builds
    under a lock in the run's common temporary folder; the others wait for it and take the same
    file. ``make`` must return a path inside ``folder``."""
    # a worker's base folder is inside the run's own (the one folder its workers share); without
    # xdist the base folder is the run's own
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent

    def build(name, make):
        folder = shared / name
        folder.mkdir(exist_ok=True)
        done = folder / ".built"
        with open(shared / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                done.write_text(str(make(folder)))
            return type(folder)(done.read_text())
    return build


@pytest.fixture(scope="session")
def host_body_library(built_once):
    """The CUDA kernel body built for the host (adamw_tau/testing/host_body.py), once per run."""
    from adamw_tau.testing import host_body
    return built_once("host_body", host_body.build)


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """A test that changes torch's thread count must set it back: the matmuls of every later
    test (the 2-process runs' one-process baselines among them) reduce in another order."""
    threads = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == threads, f"the test left torch's thread count at {torch.get_num_threads()}"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    # [note: workers] The tests are CPU-bound (the Triton interpreter, compiles, the reference),
    # and one pytest-xdist worker per core halves the fast tier's wall time on 2 cores. The
    # default is set here, not in pyproject's addopts, so that a Python without pytest-xdist
    # (a GPU image used as it is, bench/gpu_check.sh) still runs the tests, in one process.
    # `-n 0` (or `-p no:xdist`) runs in one process; --pdb does too.
    # A worker is a pytest too and comes here with no -n of its own: it must not start workers.
    worker = hasattr(config, "workerinput") or "PYTEST_XDIST_WORKER" in os.environ
    if (config.pluginmanager.hasplugin("xdist") and getattr(config.option, "numprocesses", 0) is None
            and not config.option.usepdb and not worker):
        config.option.numprocesses = "auto"


def pytest_sessionstart(session):
    # [note: the extension's build starts first] With workers, the C++ extension's first build
    # (about 90 CPU s, one translation unit) starts in the background while they start and
    # collect: a worker that needs it before it is done waits on torch's build lock, as it
    # would for the other worker's build, and a core idle behind that lock is the wait this saves.
    # It is never killed (a build killed inside torch's lock leaves the lock, and every later
    # load waits on it): a run that ends first leaves it to finish, and an extension already
    # built costs it only the import.
    config = session.config
    worker = hasattr(config, "workerinput") or "PYTEST_XDIST_WORKER" in os.environ
    if worker or getattr(config.option, "numprocesses", None) in (None, 0, "0"):
        return
    code = ("import os; quiet = os.open(os.devnull, os.O_WRONLY); os.dup2(quiet, 1); os.dup2(quiet, 2); "
            "from adamw_tau.launch import extension; extension.unavailable_reason(cuda=False)")
    os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable, "-c", code])  # no Popen left to warn at exit


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
