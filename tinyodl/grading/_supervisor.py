"""The grading supervisor: start one confined student process, then end it and all it started.

Run by the grader as ``python -I -S -B _supervisor.py`` (standard library only, trusted; it
never runs student code). Protocol on its standard streams, one JSON object per line:

* stdin, first line: the job (``argv``, ``env``, ``cwd``, ``fds``, ``limits``, ``user``,
  ``expose``, ``landlock``, ``seccomp``; see ``tinyodl/grading/sandbox.py``). Afterwards any
  line or end-of-file means "end it now"; ``died`` first gives a process the grader saw
  closing its pipes a second to exit by itself (so its real exit status is reported).
* stdout: ``{"pid": N, "landlock": ABI, "seccomp": bool}`` once the student's interpreter has
  been started, or ``{"setup_error": "..."}``; ``{"exited": STATUS}`` when the student's
  process ends by itself; finally ``{"done": true, "status": STATUS, "killed": K}`` once
  every process the student started is gone.

The supervisor is a *child subreaper*: a process the student starts and orphans (a double
fork, a ``setsid`` daemon) is re-parented to it, so at the end it can find and kill every
descendant, however it detached itself. The student runs as another user or inside a
Landlock domain scoped for signals, so it cannot signal the supervisor.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _confine  # noqa: E402  (a sibling file, loaded without the tinyodl package)


def _emit(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _place_fds(fds: dict) -> None:
    """Put the inherited pipes at their fixed numbers: 0 null, 1 null, 2 err, 3-5; close rest."""
    wanted = {2: fds["err"], 3: fds["req"], 4: fds["resp"], 5: fds["fault"]}
    high = {target: os.dup(source) for target, source in wanted.items()}
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for target, source in high.items():
        os.dup2(source, target)
    os.closerange(6, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)


def _child(job: dict) -> None:
    """In the forked child: confine, then exec the student's interpreter. Never returns."""
    step = "start"
    try:
        step = "new session"
        os.setsid()
        step = "file descriptors"
        _place_fds(job["fds"])
        step = "resource limits"
        limits = job["limits"]
        _confine.set_limits(
            limits.get("memory"), limits.get("cpu"), limits["file"], limits.get("processes")
        )
        step = "mount namespace"
        _confine.expose_paths([tuple(x) for x in job.get("expose") or []])
        os.chdir(job["cwd"])
        rules = job.get("landlock")
        if job.get("user"):
            step = "change of user"
            uid, gid = job["user"]
            _confine.drop_privileges(uid, gid)
        step = "no_new_privs"
        _confine.no_new_privs()
        if job.get("seccomp"):
            step = "seccomp"
            _confine.seccomp_no_new_processes()
        if rules is not None:
            step = "landlock"
            _confine.landlock_restrict([(p, r) for p, r in rules], job.get("landlock_abi"))
        _confine.set_parent_death_signal(signal.SIGKILL)
        step = "exec"
        os.execve(job["argv"][0], job["argv"], job["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything and exit
        try:
            os.write(2, f"sandbox setup failed at {step}: {exc!r}\n".encode())
        finally:
            os._exit(127)


def _children(me: int) -> list[int]:
    """Processes whose parent is ``me`` (from /proc; the comm field may hold spaces)."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            kids.append(int(name))
    return kids


def kill_all(pid: int) -> int:
    """SIGKILL the student's process group and every descendant; reap them; return count."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    me, killed = os.getpid(), 0
    while True:
        kids = _children(me) if os.path.isdir("/proc") else []
        for kid in kids:
            try:
                os.kill(kid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        try:
            os.waitpid(-1, 0)  # at least one has been killed, or a zombie is waiting
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            if not kids:
                return killed


def _wait_status(pid: int) -> int | None:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def main() -> int:
    job = json.loads(sys.stdin.buffer.readline())
    _confine.set_child_subreaper()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        _child(job)  # setup failures are written to the student's stderr file, exit 127
    for fd in job["fds"].values():
        os.close(fd)  # the grader holds the other ends; the supervisor needs none of them
    _emit({"pid": pid})
    status = None
    stdin = sys.stdin.buffer.fileno()
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    while True:
        watch = [stdin] + ([pidfd] if pidfd is not None and status is None else [])
        ready, _, _ = select.select(watch, [], [], None if pidfd is not None else 0.05)
        if pidfd is None and status is None:
            status = _wait_status(pid)
            if status is not None:
                _emit({"exited": status})
        if pidfd is not None and pidfd in ready and status is None:
            status = _wait_status(pid)
            _emit({"exited": status})
        if stdin in ready:
            command = sys.stdin.buffer.readline().strip()
            break
    if status is None and command == b"died":  # the grader saw it go: let it finish dying
        end = time.monotonic() + 1.0
        while status is None and time.monotonic() < end:
            status = _wait_status(pid)
            time.sleep(0.005)
    if status is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    start = time.monotonic()
    killed = kill_all(pid)
    if status is None:
        status = -signal.SIGKILL
    _emit({"done": True, "status": status, "killed": killed, "seconds": time.monotonic() - start})
    return 0


if __name__ == "__main__":
    sys.exit(main())
