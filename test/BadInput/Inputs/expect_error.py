#!/usr/bin/env python3
"""Runs a command that must fail cleanly on bad input, and prints its error.

usage: expect_error.py [--absent PATH]... [--timeout S] [--diagnostic] -- CMD [ARG...]

Passes (exit 0, the error line on stdout for FileCheck) only if CMD
  - finishes within S seconds (default 60): no hang;
  - exits with status 1 exactly: no signal, no abort, no other code;
  - writes exactly one line to stderr, starting with "error: " (with
    --diagnostic: "FILE:LINE:COL: error: ", MLIR's form for moe-opt);
  - leaves none of the --absent paths, and no temporary file beside them
    (".NAME.tmp.*" of moert::AtomicFile, "NAME-*.tmp" of LLVM's TempFile).
Otherwise it says what went wrong on stderr and exits 1.
"""
import glob
import os
import re
import subprocess
import sys


def main():
    args = sys.argv[1:]
    absent, timeout, diagnostic = [], 60.0, False
    while args and args[0] != "--":
        if args[0] == "--absent":
            absent.append(args[1])
            args = args[2:]
        elif args[0] == "--diagnostic":
            diagnostic = True
            args = args[1:]
        elif args[0] == "--timeout":
            timeout = float(args[1])
            args = args[2:]
        else:
            sys.exit("expect_error: unknown option %s" % args[0])
    cmd = args[1:]
    if not cmd:
        sys.exit("expect_error: no command")
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        sys.exit("expect_error: %s did not finish within %g s" % (cmd[0], timeout))
    err = r.stderr.decode("utf-8", "replace")
    problems = []
    if r.returncode != 1:
        problems.append("exit status %d (expected 1)" % r.returncode)
    lines = err.splitlines()
    first = re.compile(r"^\S+:\d+:\d+: error: " if diagnostic else r"^error: ")
    if len(lines) != 1 or not first.match(lines[0]):
        problems.append("stderr is %d line(s) (expected one %s line)" %
                        (len(lines), "'FILE:LINE:COL: error: ...'" if diagnostic
                         else "'error: ...'"))
    for p in absent:
        if os.path.lexists(p):
            problems.append("%s exists (expected no output)" % p)
        d, base = os.path.split(p)
        for t in (glob.glob(os.path.join(d or ".", "." + base + ".tmp.*")) +
                  glob.glob(os.path.join(d or ".", base + "-*.tmp"))):
            problems.append("temporary file %s left behind" % t)
    if problems:
        sys.stderr.write("expect_error: %s: %s\n--- stderr:\n%s" %
                         (" ".join(cmd), "; ".join(problems), err))
        sys.exit(1)
    sys.stdout.write(err)


if __name__ == "__main__":
    main()
