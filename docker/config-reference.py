#!/usr/bin/python3
"""Every configuration key of every bangfu program, from the programs themselves.

    python3 docker/config-reference.py [BIN_DIR]              print the Markdown table
    python3 docker/config-reference.py [BIN_DIR] --env        print env-file lines
    python3 docker/config-reference.py [BIN_DIR] --update FILE...

BIN_DIR (default build/bin) holds bangfu-bus, bangfu-registry, ... Each is
run with --help-config (its keys, docs, variables, bounds and defaults: the
one source of truth, from the config tables in the code). --update rewrites
the text between the markers

    <!-- config-reference:begin -->  ...  <!-- config-reference:end -->     (Markdown)
    # config-reference:begin  ...  # config-reference:end                   (env files)

so docs/operations.md and docker/.env.example stay true: run it after adding a
key. Keys the compose file sets itself (addresses) are marked as such.
"""
import os
import re
import subprocess
import sys

ORDER = ["bus", "registry", "funds", "tasks", "notify", "gateway"]
# Set by docker/docker-compose.yml for every container: operators don't.
COMPOSE_SETS = re.compile(r"^(pg\.dsn|pg\.password_file|redis\.url|redis\.password_file|bus\.xsub|bus\.pub|bus\.xsub_bind|bus\.pub_bind|"
                          r"[a-z]+\.bind)$")


def parse(text):
    """[(key, var, default, kind, doc)] from the INI-shaped --help-config output."""
    out, section, doc, var, kind = [], "", [], None, ""
    for line in text.splitlines():
        s = line.rstrip()
        m = re.match(r"^\[([^\]]+)\]$", s)
        if m:
            section, doc, var = m.group(1), [], None
            continue
        m = re.match(r"^#\s+env\s+(BANGFU_[A-Z0-9_]+)(?:,\s*(.*))?$", s)
        if m:
            var, kind = m.group(1), (m.group(2) or "").strip()
            continue
        if s.startswith("#"):
            doc.append(s[1:].strip())
            continue
        m = re.match(r"^;\s*([A-Za-z0-9_]+)\s*=\s?(.*)$", s)
        if m and var:
            key = "%s.%s" % (section, m.group(1)) if section else m.group(1)
            out.append((key, var, m.group(2), kind or "text", " ".join(doc)))
            doc, var, kind = [], None, ""
    return out


def collect(bindir):
    keys, users = {}, {}
    for name in ORDER:
        exe = os.path.join(bindir, "bangfu-" + name)
        if not os.access(exe, os.X_OK):
            continue
        text = subprocess.run([exe, "--help-config"], capture_output=True, text=True,
                              check=True).stdout
        for k in parse(text):
            keys.setdefault(k[0], k)
            # The bus loads the common table but uses only its log and bus keys.
            if name == "bus" and k[0].split(".")[0] not in ("log", "bus"):
                continue
            users.setdefault(k[0], []).append(name)
    present = [n for n in ORDER if os.access(os.path.join(bindir, "bangfu-" + n), os.X_OK)]
    return keys, users, present


def readers(who, present):
    services = [n for n in present if n != "bus"]
    if len(services) > 1 and set(who) == set(present):
        return "every program"
    if len(services) > 1 and set(who) == set(services):
        return "every service"
    return ", ".join(who)


def md_escape(s):
    return s.replace("|", "\\|")


def markdown(keys, users, present):
    rows = ["| key | variable | default | type | read by | what it does |",
            "|---|---|---|---|---|---|"]
    for key in keys:
        k, var, default, kind, doc = keys[key]
        who = readers(users[key], present)
        if COMPOSE_SETS.match(key):
            doc += " *(docker-compose sets it)*"
        rows.append("| `%s` | `%s` | %s | %s | %s | %s |" % (
            k, var, "`%s`" % md_escape(default) if default != "" else "(empty)",
            md_escape(kind), who, md_escape(doc)))
    return "\n".join(rows)


def envlines(keys, users, present):
    out, last = [], None
    for key in keys:
        k, var, default, kind, doc = keys[key]
        if COMPOSE_SETS.match(key):
            continue
        section = k.split(".")[0]
        if section != last:
            out.append("")
            out.append("# --- %s (read by %s)" % (section, readers(users[key], present)))
            last = section
        out.append("# %s%s" % (doc, " (%s)" % kind if kind and kind != "text" else ""))
        out.append("#%s=%s" % (var, default))
    return "\n".join(out).lstrip("\n")


def update(path, keys, users, present):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".md"):
        begin, end, body = ("<!-- config-reference:begin -->", "<!-- config-reference:end -->",
                            markdown(keys, users, present))
    else:
        begin, end, body = ("# config-reference:begin", "# config-reference:end",
                            envlines(keys, users, present))
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        sys.exit("%s: no %s ... %s markers" % (path, begin, end))
    new = text[:i + len(begin)] + "\n" + body + "\n" + text[j:]
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        print("updated %s (%d keys)" % (path, len(keys)))
    else:
        print("%s already up to date (%d keys)" % (path, len(keys)))


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    bindir = "build/bin"
    if args and os.path.isdir(args[0]):
        bindir = args.pop(0)
    keys, users, present = collect(bindir)
    if not keys:
        sys.exit("no bangfu-* programs in %s (build them first: make)" % bindir)
    if "--update" in argv:
        for path in args:
            update(path, keys, users, present)
    elif "--env" in argv:
        print(envlines(keys, users, present))
    else:
        print(markdown(keys, users, present))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
