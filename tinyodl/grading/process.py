"""One student process, seen from the grader: requests, answers, deadlines, the end.

A :class:`StudentProcess` asks its :class:`~tinyodl.grading.sandbox.Session`'s zygote for a
supervised, confined process, then talks to the runner over a request pipe and an answer
pipe (:mod:`tinyodl.grading._wire`) with a deadline on every read and write. On a timeout it
first asks for a stack dump (faulthandler on ``SIGUSR1``); at the end it has the supervisor
kill the process and everything it started, and returns only when they are all gone.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import tempfile
import time
from pathlib import Path

from tinyodl.grading import _wire
from tinyodl.grading.sandbox import SandboxError, Session, remove_tree

_DUMP_LIMIT = 256 * 1024


class ProcessEnded(Exception):
    """The student's process stopped answering: ``why`` is "timeout", "died" or "corrupt"."""

    def __init__(self, why: str, detail: str = ""):
        self.why, self.detail = why, detail
        super().__init__(f"{why}: {detail}" if detail else why)


def _wait(fd: int, event: int, seconds: float) -> bool:
    """Whether ``fd`` becomes ready for ``event`` within ``seconds`` (poll: any fd number)."""
    poller = select.poll()
    poller.register(fd, event)
    return bool(poller.poll(max(0, int(seconds * 1000) + 1)))


class StudentProcess:
    """One confined student interpreter, from start to the death of all it started."""

    def __init__(self, session: Session, allow: tuple[str, ...], deny: tuple[str, ...],
                 timeout: float):  # fmt: skip
        self.session = session
        self.allow = tuple(allow)
        self.pid: int | None = None
        self.status: int | None = None
        self.killed = 0
        self._closed = False
        self._buffer = b""
        self._private = Path(tempfile.mkdtemp(dir=session.dir, prefix="task-"))
        self.work = Path(tempfile.mkdtemp(dir=session.dir, prefix="work-"))
        if session.user is not None:
            os.chown(self.work, *session.user)
        copy = session.tinyodl_copy(self.allow, deny)
        job = session.job(self.work, [str(copy)] if copy is not None else [], timeout)
        self._fault_path = self._private / "dump.txt"
        self._err_path = self._private / "stderr.txt"
        fault = os.open(self._fault_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(self._err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        cmd_r, self._cmd = os.pipe()
        self._report, report_w = os.pipe()
        req_r, self._req = os.pipe()
        self._ans, ans_w = os.pipe()
        theirs = [cmd_r, report_w, req_r, ans_w, fault, err]
        try:
            session.spawn(job, theirs)
        except SandboxError:
            self._closed = True
            for fd in (self._cmd, self._report, self._req, self._ans):
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        os.set_blocking(self._req, False)
        line = self._report_line(time.monotonic() + 60)
        if "pid" not in line:
            self.close()
            raise SandboxError(f"the supervisor did not start the student's process: {line}")
        self.pid = line["pid"]
        self.max_message = session.config.max_message_mb * 2**20

    # -- the supervisor ------------------------------------------------------------------------

    def _report_line(self, deadline: float) -> dict:
        """Next JSON line from the supervisor's report pipe (``{"error": ...}`` if none)."""
        while b"\n" not in self._buffer:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return {"error": "no answer from the supervisor"}
            if not _wait(self._report, select.POLLIN, wait):
                continue
            chunk = os.read(self._report, 4096)
            if not chunk:
                return {"error": "the supervisor exited", "stderr": self.stderr()}
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    # -- messages ------------------------------------------------------------------------------

    def send(self, header: dict, arrays: dict | None, deadline: float) -> None:
        data = memoryview(_wire.pack(header, arrays))
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProcessEnded("timeout")
            try:
                if _wait(self._req, select.POLLOUT, left):
                    data = data[os.write(self._req, data[: 1 << 20]) :]
            except (BrokenPipeError, BlockingIOError) as err:
                if isinstance(err, BrokenPipeError):
                    raise ProcessEnded("died") from None

    def _read_exact(self, n: int, deadline: float) -> bytearray:
        buffer = bytearray(n)
        view, done = memoryview(buffer), 0
        while done < n:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise ProcessEnded("timeout")
            if not _wait(self._ans, select.POLLIN, wait):
                continue
            got = os.readv(self._ans, [view[done : done + (1 << 20)]])
            if not got:
                raise ProcessEnded("died")
            done += got
        return buffer

    def receive(self, deadline: float) -> tuple[dict, dict]:
        """Next message from the student's process (``ProcessEnded`` when there is none)."""
        try:
            n_head, n_payload = _wire.parse_prefix(
                self._read_exact(_wire.PREFIX_SIZE, deadline), self.max_message
            )
            head = self._read_exact(n_head, deadline)
            payload = self._read_exact(n_payload, deadline)
            return _wire.parse_body(head, payload, self.max_message)
        except _wire.WireError as err:
            raise ProcessEnded("corrupt", str(err)) from None

    # -- diagnostics ---------------------------------------------------------------------------

    def dump_stack(self, wait: float = 1.0) -> str:
        """Ask the student's process for a stack dump (faulthandler on SIGUSR1) and read it."""
        before = self._fault_path.stat().st_size
        try:
            os.kill(self.pid, signal.SIGUSR1)
        except OSError:
            return self.dumps()
        end, size = time.monotonic() + wait, before
        while time.monotonic() < end:
            time.sleep(0.02)
            now = self._fault_path.stat().st_size
            if now > before and now == size:
                break
            size = now
        return self.dumps(before)

    def dumps(self, start: int = 0) -> str:
        with open(self._fault_path, "rb") as f:
            f.seek(start)
            return f.read(_DUMP_LIMIT).decode("utf-8", "replace")

    def stderr(self, limit: int = 4000) -> str:
        try:
            data = self._err_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    # -- the end -------------------------------------------------------------------------------

    def close(self, died: bool = False) -> None:
        """End the student's process and all it started; returns once they are all gone.

        ``died=True`` when the process closed its pipes: it gets a second to exit by itself,
        so that its exit status (or the signal that killed it) can be reported.
        """
        if self._closed:
            return
        self._closed = True
        try:
            os.write(self._cmd, b"died\n" if died else b"kill\n")
        except OSError:
            pass
        deadline = time.monotonic() + 60
        done = False
        while time.monotonic() < deadline:
            line = self._report_line(deadline)
            if "exited" in line and self.status is None:
                self.status = line["exited"]
            if line.get("done"):
                self.status = line["status"] if self.status is None else self.status
                self.killed = line.get("killed", 0)
                done = True
                break
            if "error" in line:
                break
        if not done and self.pid is not None:  # the supervisor failed: kill the group at least
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
        for fd in (self._cmd, self._report, self._req, self._ans):
            try:
                os.close(fd)
            except OSError:
                pass
        remove_tree(self.work)

    def cleanup(self) -> None:
        """Remove the private folder (after :meth:`close`, once diagnostics were read)."""
        remove_tree(self._private)

    def __enter__(self) -> StudentProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self.cleanup()


_FRAME = re.compile(r'File "(?P<file>[^"]*)", line (?P<line>\d+) in (?P<name>\S+)')


def parse_dump(text: str) -> tuple[str | None, list[tuple[str, int, str]]]:
    """(fatal error line or None, frames of the main thread, innermost first) of a dump."""
    fatal = None
    blocks: list[list[tuple[str, int, str]]] = []
    for line in text.splitlines():
        if line.startswith("Fatal Python error:"):
            fatal = line.split(":", 1)[1].strip()
        elif "(most recent call first)" in line:
            blocks.append([])
        else:
            match = _FRAME.search(line)
            if match and blocks:
                blocks[-1].append((match["file"], int(match["line"]), match["name"]))
    main = [b for b in blocks if any(f[0].endswith("_tinyodl_runner.py") for f in b)]
    frames = main[-1] if main else (blocks[-1] if blocks else [])
    return fatal, frames
