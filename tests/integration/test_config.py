"""configs/bangfu.conf is what scripts/gen-config.py makes from the binaries:
every key of every service, documented, with its variable and default."""
import os
import subprocess

from bftest import BUILD, eq

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_shipped_config_lists_every_key():
    out = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "gen-config.py"), BUILD],
                         capture_output=True, text=True, check=True).stdout
    with open(os.path.join(ROOT, "configs", "bangfu.conf")) as f:
        shipped = f.read()
    eq(shipped.strip(), out.strip(),
       "configs/bangfu.conf is stale: run python3 scripts/gen-config.py build > configs/bangfu.conf")


def test_shipped_config_loads_in_every_service():
    for name in sorted(os.listdir(os.path.join(BUILD, "bin"))):
        if not name.startswith("bangfu-"):
            continue
        # --help-config loads nothing; a bad file would fail at start, so load it
        # through a start that stops at once: --version does not read config,
        # so use --migrate-only against the test database
        if name == "bangfu-bus":
            continue
        r = subprocess.run([os.path.join(BUILD, "bin", name), "--config",
                            os.path.join(ROOT, "configs", "bangfu.conf"), "--migrate-only"],
                           capture_output=True, text=True, timeout=60)
        eq(r.returncode, 0, "%s --config configs/bangfu.conf: %s" % (name, r.stderr[-1000:]))
