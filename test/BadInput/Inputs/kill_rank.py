#!/usr/bin/env python3
"""Kills one rank of a multi-rank run with SIGKILL and checks the others end.

usage: kill_rank.py --rank R [--limit S] [--absent PATH]... -- LAUNCHER [ARG...]

Starts LAUNCHER (mpirun -np N moe-run ...), waits until every rank process
has used some CPU time (so the kill lands mid-run), kills rank R with
SIGKILL, then requires within S seconds (default 30):
  - the launcher has exited with a nonzero status;
  - no rank process is left, running or zombie;
  - no --absent path (outputs of the run) exists.
Prints the launcher's stderr and "kill_rank: ranks ended after T s" on
success; otherwise says what is wrong and exits 1. The whole check is
bounded in time, so a regression fails instead of hanging the suite.
"""
import os
import signal
import subprocess
import sys
import time


def rank_processes(root):
    """pid -> rank of the launcher's descendants that are MPI ranks."""
    children = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(pid))
        except (OSError, ValueError):
            continue
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            todo.append(c)
            try:
                env = open("/proc/%d/environ" % c, "rb").read().split(b"\0")
            except OSError:
                continue
            for e in env:
                if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                    found[c] = int(e.split(b"=", 1)[1])
    return found


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def alive(pid):
    """True while /proc/pid exists (zombies included)."""
    return os.path.exists("/proc/%d" % pid)


def fail(msg, proc=None):
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    sys.stderr.write("kill_rank: %s\n" % msg)
    sys.exit(1)


def main():
    args = sys.argv[1:]
    rank, limit, absent = None, 30.0, []
    while args and args[0] != "--":
        if args[0] == "--rank":
            rank, args = int(args[1]), args[2:]
        elif args[0] == "--limit":
            limit, args = float(args[1]), args[2:]
        elif args[0] == "--absent":
            absent.append(args[1])
            args = args[2:]
        else:
            fail("unknown option " + args[0])
    cmd = args[1:]
    errpath = os.path.join(os.environ.get("TMPDIR", "/tmp"), "kill_rank.%d.err" % os.getpid())
    err = open(errpath, "w+")
    # A process group of its own (killed whole on failure), in this session:
    # in a session of its own the launcher's ranks form a scheduler
    # autogroup that starved this process (its 50 ms sleep took 11 s while
    # tensor-parallel ranks spun in MPI), so it killed after the run ended.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, process_group=0)

    # Wait (at most 60 s) until all ranks run and have computed a little:
    # 1 s of CPU each. MPI's initialization alone can take 0.3 s of CPU on a
    # loaded machine (under the sanitizers), and a kill before it completes
    # ends the other rank with MPI's own error instead of the launcher's
    # SIGTERM; the runs this kills take minutes.
    deadline = time.time() + 60
    ranks = {}
    while time.time() < deadline:
        if proc.poll() is not None:
            fail("the run ended (status %d) before a rank could be killed" % proc.returncode)
        ranks = rank_processes(proc.pid)
        if len(ranks) >= 2 and all(cpu_seconds(p) > 1.0 for p in ranks):
            break
        time.sleep(0.05)
    else:
        fail("ranks did not start within 60 s", proc)
    victim = [p for p, r in ranks.items() if r == rank]
    if not victim:
        fail("no process of rank %d among %s" % (rank, sorted(ranks.values())), proc)
    os.kill(victim[0], signal.SIGKILL)
    killed = time.time()

    try:
        status = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        fail("the launcher still runs %g s after rank %d was killed" % (limit, rank), proc)
    # Ranks must be gone too (a zombie still has a /proc entry).
    while any(alive(p) for p in ranks) and time.time() < killed + limit:
        time.sleep(0.05)
    elapsed = time.time() - killed
    left = [p for p in ranks if alive(p)]
    if left:
        fail("rank processes %s are left %g s after the kill" % (left, limit))
    if status == 0:
        fail("the launcher exited with status 0 although rank %d was killed" % rank)
    for p in absent:
        if os.path.lexists(p):
            fail("%s exists (expected no output from a failed run)" % p)
    err.seek(0)
    sys.stdout.write(err.read())
    err.close()
    os.remove(errpath)
    print("kill_rank: ranks ended after %.1f s (limit %g s), launcher status %d" %
          (elapsed, limit, status))


if __name__ == "__main__":
    main()
