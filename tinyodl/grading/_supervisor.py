"""The grading zygote and supervisors: start confined student processes, then end them and all
they started.

Trusted code, standard library plus numpy; it never runs student code itself. The grader
starts one *zygote* per grading session, a ``python -I -S -B`` running this file (copied into
the session's runtime folder with ``_tinyodl_confine.py``, ``_tinyodl_runner.py`` and
``_tinyodl_wire.py``) with a UNIX socket as its standard input. The zygote imports the runner
(and so numpy) once, answers ``{"ready": true}`` (one line), then for every job it receives
(a 4-byte length and a JSON object, the job's six file descriptors attached) forks a
*supervisor*:

* the supervisor makes itself a child subreaper and forks the *student* process, which
  confines itself (new session, file descriptors, rlimits, mount namespace, user, seccomp,
  Landlock; ``_tinyodl_confine.py``) and runs the runner: a fresh copy of an interpreter that
  has run no student code, without paying for a new interpreter and numpy on every task;
* on its report pipe the supervisor writes ``{"pid": N}``, ``{"exited": STATUS}`` when the
  student's process ends by itself, and finally ``{"done": true, "status": S, "killed": K}``
  once every process the student started is gone;
* a line on its command pipe, or end-of-file, means "end it now"; ``died`` first gives a
  process that closed its pipes a second to exit, so that its real exit status is reported.

Because the supervisor is a subreaper, a process the student starts and orphans (a double
fork, a ``setsid`` daemon) is re-parented to it, so at the end it can find and kill every
descendant however it detached itself. The student runs as another user or inside a Landlock
domain scoped for signals, so it cannot signal the supervisor, the zygote or the grader.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time

import _tinyodl_confine as confine

_JOB_FDS = ("cmd", "report", "req", "ans", "fault", "err")


def _emit(fd: int, message: dict) -> None:
    try:
        os.write(fd, (json.dumps(message) + "\n").encode())
    except OSError:
        pass  # the grader is gone; carry on killing


def _place_fds(fds: dict) -> None:
    """The student's file descriptors: 0/1 null, 2 err, 3 requests, 4 answers, 5 dumps."""
    wanted = {2: fds["err"], 3: fds["req"], 4: fds["ans"], 5: fds["fault"]}
    high = {target: os.dup(source) for target, source in wanted.items()}
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for target, source in high.items():
        os.dup2(source, target)
    os.closerange(6, 65536)


def _student(job: dict, fds: dict) -> None:
    """In the forked student process: confine, then serve the grader. Never returns."""
    step = "start"
    try:
        step = "new session"
        os.setsid()
        step = "file descriptors"
        _place_fds(fds)
        step = "resource limits"
        limits = job["limits"]
        confine.set_limits(
            limits.get("memory"), limits.get("cpu"), limits["file"], limits.get("processes")
        )
        step = "mount namespace"
        confine.expose_paths([tuple(x) for x in job.get("expose") or []])
        os.chdir(job["cwd"])
        step = "capability bounding set"
        confine.drop_bounding_set()
        if job.get("user"):
            step = "change of user"
            confine.drop_privileges(*job["user"])
        step = "capabilities"
        confine.clear_capabilities()
        step = "no_new_privs"
        confine.no_new_privs()
        if job.get("seccomp") is not None:
            step = "seccomp"
            confine.seccomp_restrict(processes=job["seccomp"]["processes"])
        if job.get("landlock") is not None:
            step = "landlock"
            confine.landlock_restrict([tuple(r) for r in job["landlock"]], job["landlock_abi"])
        confine.set_parent_death_signal(signal.SIGKILL)
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = [""]
        step = "runner"
        import _tinyodl_runner

        _tinyodl_runner.serve(job["path"])
    except BaseException as exc:  # noqa: BLE001 - report anything and exit
        try:
            os.write(2, f"sandbox setup failed at {step}: {exc!r}\n".encode())
        finally:
            os._exit(127)
    os._exit(0)


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


def _supervise(job: dict, fds: dict) -> None:
    """In the forked supervisor: start the student, wait for the end, kill all. No return."""
    try:
        confine.set_child_subreaper()
        pid = os.fork()
        if pid == 0:
            _student(job, fds)
        for name in ("req", "ans", "fault", "err"):
            os.close(fds[name])
        report, cmd = fds["report"], fds["cmd"]
        _emit(report, {"pid": pid})
        status, command = None, b""
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        while True:
            watch = [cmd] + ([pidfd] if pidfd is not None and status is None else [])
            ready, _, _ = select.select(watch, [], [], None if pidfd is not None else 0.05)
            if status is None and (pidfd is None or pidfd in ready):
                status = _wait_status(pid)
                if status is not None:
                    _emit(report, {"exited": status})
            if cmd in ready:
                command = os.read(cmd, 64).strip()
                break
        if status is None and command == b"died":
            end = time.monotonic() + 1.0
            while status is None and time.monotonic() < end:
                status = _wait_status(pid)
                time.sleep(0.005)
        if status is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        killed = kill_all(pid)
        _emit(report, {"done": True, "status": -signal.SIGKILL if status is None else status,
                       "killed": killed})  # fmt: skip
    finally:
        os._exit(0)


def _receive_job(control: socket.socket) -> tuple[dict | None, list[int]]:
    """One job from the grader: length-prefixed JSON, file descriptors on its first bytes."""
    head, fds, _, _ = socket.recv_fds(control, 4, len(_JOB_FDS))
    while head and len(head) < 4:
        more = control.recv(4 - len(head))
        if not more:
            return None, fds
        head += more
    if len(head) < 4:
        return None, fds
    size, body = int.from_bytes(head, "big"), b""
    while len(body) < size:
        chunk = control.recv(min(size - len(body), 1 << 20))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


def main() -> None:
    """The zygote: preload the runner, then fork a supervisor per job until end-of-file."""
    control = socket.socket(fileno=0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped automatically
    try:
        import _tinyodl_runner  # noqa: F401 - numpy and the runner, once for all tasks

        control.sendall(json.dumps({"ready": True}).encode() + b"\n")
    except BaseException as exc:  # noqa: BLE001
        control.sendall(json.dumps({"error": repr(exc)}).encode() + b"\n")
        return
    while True:
        job, fds = _receive_job(control)
        if job is None:
            for fd in fds:
                os.close(fd)
            return
        named = dict(zip(_JOB_FDS, fds, strict=True))
        if os.fork() == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _supervise(job, named)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    main()
