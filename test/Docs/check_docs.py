#!/usr/bin/env python3
"""Keeps the code blocks of the docs true.

usage: check_docs.py [--update] [--build DIR] REPO DOC.md...

A fenced code block preceded by one of these HTML comments (invisible when
rendered) is checked:

  <!-- output: CMD -->    the block is CMD's stdout (run by bash in REPO with
                          the tools on PATH). A trailing "| layer" keeps only
                          the first moe.layer op of the output.
  <!-- excerpt: PATH -->  the block is a run of consecutive lines of
                          REPO/PATH (compared without common indentation).
  <!-- file: PATH -->     the block is the whole of REPO/PATH.

Commands are written for the default build directory `build/`; --build
points them at another one. Blocks are compared without common indentation
and trailing blank lines.
--update rewrites the output blocks from the commands (excerpts must be
fixed by hand). Relative links ([text](path)) must name existing files.
Exit status 1 on any mismatch, with a diff.
"""
import difflib
import os
import re
import subprocess
import sys
import textwrap

MARK = re.compile(r"^<!-- (output|excerpt|file): (.*) -->\s*$")
FENCE = re.compile(r"^(\s*)```")


def normalize(lines):
    text = textwrap.dedent("\n".join(lines).rstrip("\n"))
    return [l.rstrip() for l in text.split("\n")]


def first_layer(lines):
    for i, line in enumerate(lines):
        if re.search(r"\bmoe\.layer \d+ ", line):
            indent = line[: len(line) - len(line.lstrip())]
            for j in range(i + 1, len(lines)):
                if lines[j] == indent + "}":
                    return lines[i : j + 1]
            break
    raise ValueError("no moe.layer in the output")


BUILD = None


def run(repo, cmd):
    if BUILD:
        cmd = re.sub(r"(?<![\w/.-])build/", BUILD.rstrip("/") + "/", cmd)
    select_layer = False
    if re.search(r"\|\s*layer\s*$", cmd):
        cmd = re.sub(r"\|\s*layer\s*$", "", cmd)
        select_layer = True
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=repo,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise ValueError(f"exit {out.returncode}: {out.stderr.strip()}")
    lines = out.stdout.rstrip("\n").split("\n")
    return first_layer(lines) if select_layer else lines


def contains(haystack, needle):
    n = len(needle)
    return any(normalize(haystack[i : i + n]) == needle
               for i in range(len(haystack) - n + 1))


LINK = re.compile(r"\]\(([^)\s]+)\)")


def check_links(path, lines):
    errors, fenced = [], False
    for n, line in enumerate(lines, 1):
        if FENCE.match(line):
            fenced = not fenced
        if fenced:
            continue
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file = os.path.join(os.path.dirname(path), target.split("#")[0])
            if not os.path.exists(file):
                errors.append(f"{path}:{n}: link to {target}, which does not exist")
    return errors


def check(repo, path, update):
    lines = open(path).read().split("\n")
    errors, out, i = check_links(path, lines), [], 0
    while i < len(lines):
        m = MARK.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        kind, arg = m.group(1), m.group(2).strip()
        while i < len(lines) and not FENCE.match(lines[i]):
            out.append(lines[i])
            i += 1
        if i == len(lines):
            errors.append(f"{path}: <!-- {kind}: {arg} --> has no code block")
            break
        fence_line, i = lines[i], i + 1
        body = []
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        closing = lines[i] if i < len(lines) else "```"
        i += 1
        block = normalize(body)
        where = f"{path}:{len(out) + 1}"
        try:
            if kind == "output":
                want = normalize(run(repo, arg))
                if update:
                    body = want
                if block != want and not update:
                    errors.append(f"{where}: the output of `{arg}` changed:\n" +
                                  "\n".join(difflib.unified_diff(
                                      block, want, "doc", "output", lineterm="")))
            else:
                source = open(os.path.join(repo, arg)).read().rstrip("\n").split("\n")
                ok = (normalize(source) == block if kind == "file"
                      else contains(source, block))
                if not ok:
                    errors.append(f"{where}: the block is not {'' if kind == 'file' else 'an excerpt of '}{arg}")
        except (OSError, ValueError) as e:
            errors.append(f"{where}: {kind} {arg}: {e}")
        out.append(fence_line)
        out.extend(body)
        out.append(closing)
    if update:
        open(path, "w").write("\n".join(out))
    return errors


def main():
    global BUILD
    args = sys.argv[1:]
    update = "--update" in args
    args = [a for a in args if a != "--update"]
    if "--build" in args:
        i = args.index("--build")
        BUILD = os.path.abspath(args[i + 1])
        del args[i : i + 2]
    repo, docs = args[0], args[1:]
    errors, checked = [], 0
    for doc in docs:
        path = os.path.join(repo, doc)
        checked += sum(1 for l in open(path) if MARK.match(l))
        errors += check(repo, path, update)
    for e in errors:
        print("error:", e)
    print(f"{checked} code blocks checked, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
