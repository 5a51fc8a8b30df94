#!/usr/bin/python3
"""bench/sql_from_c.py: a service's SQL statement, as a pgbench script line.

Usage: sql_from_c.py SOURCE.c NAME [PARAM=TEXT ...] < preprocessed-SOURCE

Reads the C preprocessor's output of SOURCE.c (gcc -E, so macros that build
the statement are expanded) on standard input, finds the string constant
`NAME = "..." "..." ...;` in it, and prints the concatenated statement on one
line with each $N replaced by the TEXT given for it (a pgbench variable such
as :id, or NULL::text). A colon before a letter inside a quoted SQL literal
(a to_char format's HH24:MI) becomes ' || chr(58) || ', because pgbench
would take :MI for a variable. The bench's raw baselines so run the statement
the service runs, taken from the source at bench time, never a stale copy.
Exits 1, saying why, when the constant is not found or a $N has no TEXT.
"""
import re
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    src, name = sys.argv[1], sys.argv[2]
    params = {}
    for a in sys.argv[3:]:
        k, _, v = a.partition("=")
        params[k] = v
    text = sys.stdin.read()
    m = re.search(r"\b%s\s*=\s*(\"(?:[^\"\\]|\\.)*\"\s*)+;" % re.escape(name), text)
    if not m:
        sys.exit("sql_from_c: no string constant %s in %s" % (name, src))
    sql = "".join(re.findall(r"\"((?:[^\"\\]|\\.)*)\"", m.group(0)[m.group(0).index("=") :]))
    sql = sql.replace('\\"', '"').replace("\\\\", "\\")
    sql = re.sub(r"\s+", " ", sql).strip()

    def literal(lm):
        return re.sub(r":(?=[A-Za-z_])", "' || chr(58) || '", lm.group(0))

    sql = re.sub(r"'(?:[^']|'')*'", literal, sql)

    def param(pm):
        k = pm.group(1)
        if k not in params:
            sys.exit("sql_from_c: %s in %s uses $%s and no value was given for it" % (name, src, k))
        return params[k]

    sql = re.sub(r"\$(\d+)", param, sql)
    print(sql + ";")


if __name__ == "__main__":
    main()
