"""runner: runs every test_* function in tests/integration/test_*.py.

Prints "ok - file::test" or "not ok - file::test" with the reason, then
"# N passed, N failed". A module may define setup_module() / teardown_module()
(e.g. to start a Stack once for all its tests); if setup fails, each of its
tests counts as failed.
"""
import argparse
import glob
import importlib.util
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--match", default="")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    files = args.files or sorted(glob.glob(os.path.join(HERE, "..", "integration", "test_*.py")))
    passed = failed = 0
    for path in files:
        name = os.path.basename(path)[:-3]
        if args.match and args.match not in name:
            continue
        pids_before = _pids_started()
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        tests = []
        try:
            spec.loader.exec_module(mod)
            tests = [(n, getattr(mod, n)) for n in sorted(dir(mod))
                     if n.startswith("test_") and callable(getattr(mod, n))]
            order = getattr(mod, "ORDER", None)
            if order:
                tests.sort(key=lambda t: order.index(t[0]) if t[0] in order else len(order))
            else:
                tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
            only = os.environ.get("TEST_ONLY", "")
            if only:  # TEST_ONLY=substring: only the test functions whose name holds it
                tests = [t for t in tests if only in t[0]]
            if hasattr(mod, "setup_module"):
                mod.setup_module()
        except Exception:
            print("not ok - %s (setup)\n%s" % (name, _indent(traceback.format_exc())))
            failed += max(1, len(tests))
            _teardown(mod)
            continue
        for tname, fn in tests:
            t0 = time.time()
            try:
                fn()
                passed += 1
                print("ok - %s::%s (%.1fs)" % (name, tname, time.time() - t0))
            except Exception:
                failed += 1
                print("not ok - %s::%s (%.1fs)\n%s" % (name, tname, time.time() - t0,
                                                       _indent(traceback.format_exc())))
            sys.stdout.flush()
        try:
            _teardown(mod)
        except Exception:
            failed += 1
            print("not ok - %s (teardown)\n%s" % (name, _indent(traceback.format_exc())))
        left = _left_running(pids_before)
        if left:
            # a service left running keeps its relay's advisory lock (one
            # relay per service per database) and moves later modules'
            # events to its own, dead bus: a defect of the module
            failed += 1
            print("not ok - %s (left running after teardown, now killed: %s)" % (
                name, "; ".join(left)))
    print("# %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def _pids_started():
    """How many processes bftest recorded in $TMP/pids so far."""
    try:
        with open(os.path.join(os.environ.get("BANGFU_TEST_TMP", ""), "pids")) as f:
            return len(f.read().split())
    except OSError:
        return 0


def _left_running(since):
    """The processes bftest started (as our children) after the first `since`
    that still run, each killed and named by its command line."""
    try:
        with open(os.path.join(os.environ.get("BANGFU_TEST_TMP", ""), "pids")) as f:
            pids = [int(p) for p in f.read().split()[since:]]
    except (OSError, ValueError):
        return []
    left = []
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            if state == "Z" or int(ppid) != os.getpid():
                continue  # ended (not yet waited for), or the pid is another's now
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            os.kill(pid, 9)
        except (OSError, IndexError):
            continue
        left.append("%d %s" % (pid, cmd))
    return left


def _teardown(mod):
    if hasattr(mod, "teardown_module"):
        mod.teardown_module()


def _indent(s):
    return "\n".join("    " + line for line in s.rstrip().splitlines())


if __name__ == "__main__":
    sys.exit(main())
