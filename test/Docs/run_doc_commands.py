#!/usr/bin/env python3
"""Runs the shell commands the docs show, so that none of them can drift.

usage: run_doc_commands.py [--list] [--build DIR] [--shared DIR] [--mpi] REPO [DOC.md...]

Every ```sh block of the given docs (default: README.md and docs/*.md) is
run, command by command, unless the line before its fence marks it:

  <!-- not run: REASON -->   never run (a large model, a GPU, packages to
                             install, a placeholder synopsis, or another
                             test that covers it); REASON is required
  <!-- needs: mpirun -->     run only with --mpi (an MPI build and mpirun)

A command is a line of the block (a trailing backslash continues it; `#`
starts a comment outside quotes). The commands of one doc run in order, in a
fresh directory that looks like the repository (its top-level entries
linked, `build/` the build directory, `../shared` the shared folder), with
`build/bin` on PATH, so the files one command writes are there for the next
and nothing is written into the repository. A command fails when it exits
non-zero or runs longer than 120 s.
--list prints what would run without running it. Prints one line per command
run or block not run, then
"N commands run, M blocks not run, F failed"; exit status 1 on any failure
or an sh block with an empty reason.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

FENCE = re.compile(r"^\s*```(\w*)")
NOT_RUN = re.compile(r"^<!-- not run:(.*)-->\s*$")
NEEDS = re.compile(r"^<!-- needs: (mpirun) -->\s*$")
TIMEOUT = 120


def strip_comment(line):
    """The line without a `#` comment that starts outside quotes."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def blocks(path):
    """(line of the fence, marker line or "", [(line, command)]) per sh block."""
    lines = open(path).read().split("\n")
    i, out = 0, []
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        marker = lines[i - 1].strip() if i > 0 else ""
        i += 1
        body = []
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if lang not in ("sh", "bash", "shell", "console"):
            continue
        commands, pending, first = [], "", None
        for n, text in body:
            text = strip_comment(text)
            if not pending and not text.strip():
                continue
            first = first or n
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            commands.append((first, (pending + text).strip()))
            pending, first = "", None
        out.append((start + 1, marker, commands))
    return out


def workdir(repo, build, shared):
    """A directory laid out like the repository, for one doc's commands."""
    top = tempfile.mkdtemp(prefix="moe-doc-commands-")
    os.symlink(shared, os.path.join(top, "shared"))
    work = os.path.join(top, "repo")
    os.mkdir(work)
    for entry in os.listdir(repo):
        if entry in (".git", "build"):
            continue
        os.symlink(os.path.join(repo, entry), os.path.join(work, entry))
    os.symlink(build, os.path.join(work, "build"))
    return top, work


def main():
    args = sys.argv[1:]
    mpi, dry = "--mpi" in args, "--list" in args
    args = [a for a in args if a not in ("--mpi", "--list")]
    build = shared = None
    for flag in ("--build", "--shared"):
        if flag in args:
            i = args.index(flag)
            value = os.path.abspath(args[i + 1])
            del args[i : i + 2]
            if flag == "--build":
                build = value
            else:
                shared = value
    repo = os.path.abspath(args[0])
    build = build or os.path.join(repo, "build")
    shared = shared or os.path.join(os.path.dirname(repo), "shared")
    docs = args[1:] or ["README.md"] + sorted(
        os.path.relpath(p, repo) for p in glob.glob(os.path.join(repo, "docs", "*.md")))
    env = dict(os.environ)
    env["PATH"] = os.path.join(build, "bin") + os.pathsep + env.get("PATH", "")
    ran = skipped = failed = 0
    for doc in docs:
        found = blocks(os.path.join(repo, doc))
        if not found:
            continue
        top, work = workdir(repo, build, shared)
        try:
            for fence, marker, commands in found:
                where = f"{doc}:{fence}"
                m = NOT_RUN.match(marker)
                if m and not m.group(1).strip():
                    print(f"error: {where}: <!-- not run: --> without a reason")
                    failed += 1
                    continue
                needs = NEEDS.match(marker)
                if m or (needs and not mpi):
                    reason = m.group(1).strip() if m else "needs " + needs.group(1)
                    print(f"not run: {where}: {reason}")
                    skipped += 1
                    continue
                # Tests may run as root, on fewer cores than ranks.
                run_env = dict(env, OMPI_ALLOW_RUN_AS_ROOT="1",
                               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                               OMPI_MCA_rmaps_base_oversubscribe="1") if needs else env
                for line, command in commands:
                    if dry:
                        print(f"would run: {doc}:{line}: {command}")
                        continue
                    start = time.time()
                    try:
                        out = subprocess.run(["bash", "-o", "pipefail", "-c", command],
                                             cwd=work, env=run_env, capture_output=True,
                                             text=True, errors="replace", timeout=TIMEOUT)
                        code, err = out.returncode, out.stderr.strip()
                    except subprocess.TimeoutExpired:
                        code, err = "timeout", f"ran longer than {TIMEOUT} s"
                    ran += 1
                    if code != 0:
                        failed += 1
                        tail = "\n".join(err.split("\n")[-5:])
                        print(f"error: {doc}:{line}: `{command}` failed ({code}):\n{tail}")
                    else:
                        print(f"ok: {doc}:{line}: {command} ({time.time() - start:.1f} s)")
        finally:
            shutil.rmtree(top, ignore_errors=True)
    print(f"{ran} commands run, {skipped} blocks not run, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
