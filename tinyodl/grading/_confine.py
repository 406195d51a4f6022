"""Kernel confinement of the student's process: Landlock, seccomp, rlimits, user, mounts.

Standard library only: the grading supervisor (``_supervisor.py``) loads this file by path
in a ``python -I -S`` interpreter and applies it in the forked student process, between
``fork`` and ``exec``. The grader imports it as ``tinyodl.grading._confine`` to probe what
the kernel offers (:func:`landlock_abi`) and to plan the sandbox.

The layers (``docs/architecture.md``, "Grading"):

* **Landlock** (Linux >= 5.13; :func:`landlock_restrict`): the process and everything it
  starts may read only the listed paths and write only its own work directory; with ABI >= 4
  it may not open TCP connections; with ABI >= 6 it may not signal processes outside its
  domain (the supervisor, the grader) nor reach their abstract UNIX sockets.
* **seccomp** (:func:`seccomp_restrict`): ``fork``, ``vfork``, ``clone`` without
  ``CLONE_THREAD`` fail with ``EPERM`` (``clone3`` with ``ENOSYS``, so that the C library
  falls back to ``clone`` for threads; threads still work), and so do sockets, ``ptrace``,
  namespaces and other syscalls student code never needs.
* **capabilities** (:func:`drop_bounding_set`, :func:`clear_capabilities`): none left,
  even for uid 0.
* **rlimits** (:func:`set_limits`): address space, processes, file size, CPU time, open
  files, no core dumps.
* **user** (:func:`drop_privileges`): when the grader runs as root, the student runs as an
  unprivileged user; :func:`expose_paths` first makes the interpreter reachable for that user
  in a private mount namespace when it lives under a private directory (``/root/.pyenv``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import stat
import struct

# -- syscalls ----------------------------------------------------------------------------------

_MACHINE = platform.machine()
# Landlock's numbers are the same on every architecture that has them (unified table).
_NR = {
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
}
# Syscalls the student's process never needs, per architecture: creating processes ("fork"
# and "vfork" exist only on x86_64) and namespaces, reading or writing other processes,
# sockets of any kind, kernel keyrings, bpf, perf, userfaultfd, io_uring, capabilities.
_SECCOMP_ARCH = {
    "x86_64": (
        0xC000003E,
        {"clone": 56, "fork": 57, "vfork": 58},
        {"unshare": 272, "setns": 308, "ptrace": 101, "process_vm_readv": 310,
         "process_vm_writev": 311, "socket": 41, "socketpair": 53, "add_key": 248,
         "request_key": 249, "keyctl": 250, "bpf": 321, "perf_event_open": 298,
         "userfaultfd": 323, "capset": 126},
    ),
    "aarch64": (
        0xC00000B7,
        {"clone": 220},
        {"unshare": 97, "setns": 268, "ptrace": 117, "process_vm_readv": 270,
         "process_vm_writev": 271, "socket": 198, "socketpair": 199, "add_key": 217,
         "request_key": 218, "keyctl": 219, "bpf": 280, "perf_event_open": 241,
         "userfaultfd": 282, "capset": 91},
    ),
}  # fmt: skip
_NR_CLONE3, _NR_IO_URING_SETUP, _NR_PIDFD_GETFD = 435, 425, 438
_NR_CAPSET = {"x86_64": 126, "aarch64": 91}

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SECCOMP_MODE_FILTER = 2
_CLONE_THREAD = 0x00010000
_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2

_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.prctl.restype = ctypes.c_int
        _libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc.unshare.argtypes = [ctypes.c_int]
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def prctl(option: int, arg2: int = 0, arg3=0) -> int:
    """``prctl(2)``; raises ``OSError`` on failure."""
    return _check(
        _c().prctl(option, ctypes.c_ulong(arg2), arg3, ctypes.c_ulong(0), ctypes.c_ulong(0)),
        f"prctl({option})",
    )


def set_child_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux >= 3.4)."""
    if not _linux():
        return False
    try:
        prctl(_PR_SET_CHILD_SUBREAPER, 1)
        return True
    except (OSError, AttributeError):
        return False


def _linux() -> bool:
    return os.uname().sysname == "Linux"


def set_parent_death_signal(signum: int) -> None:
    """Receive ``signum`` when the parent dies (cleared by a change of user: call it last).
    Linux only; elsewhere the supervisor's kill of the process group has to do."""
    if _linux():
        prctl(_PR_SET_PDEATHSIG, signum)


# -- Landlock ----------------------------------------------------------------------------------

FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 16, 32, 64, 128
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK = 256, 512, 1024, 2048
FS_MAKE_SYM, FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 4096, 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
_RULE_PATH_BENEATH = 1


def landlock_abi() -> int:
    """Landlock ABI version of the running kernel, 0 when Landlock is unavailable."""
    if not _linux():
        return 0
    try:
        version = _c().syscall(_NR["landlock_create_ruleset"], None, ctypes.c_size_t(0), 1)
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE ... MAKE_SYM
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
WRITE = (
    FS_READ_FILE
    | FS_READ_DIR
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)


def landlock_restrict(rules: list[tuple[str, int]], abi: int | None = None) -> int:
    """Confine this process (and its future children) to ``rules``; return the ABI used.

    Parameters
    ----------
    rules : list of (path, rights)
        Rights granted beneath each path (``READ``, ``WRITE`` or a combination of the
        ``FS_*`` bits); every other file-system access is denied. Paths that do not exist
        are ignored; rights a file cannot have (``READ_DIR`` on a file) are dropped.
    abi : int, optional
        Landlock ABI to use (default: the kernel's). With ABI >= 4 TCP bind/connect are
        denied; with ABI >= 6 signals and abstract UNIX sockets are scoped to the domain.

    Returns 0 and changes nothing when the kernel has no Landlock. The caller must have set
    ``no_new_privs`` (:func:`no_new_privs`) or hold ``CAP_SYS_ADMIN``.
    """
    abi = landlock_abi() if abi is None else abi
    if abi <= 0:
        return 0
    handled = _handled_fs(abi)
    if abi >= 6:
        attr = struct.pack("QQQ", handled, NET_BIND_TCP | NET_CONNECT_TCP, 3)
    elif abi >= 4:
        attr = struct.pack("QQ", handled, NET_BIND_TCP | NET_CONNECT_TCP)
    else:
        attr = struct.pack("Q", handled)
    buf = ctypes.create_string_buffer(attr, len(attr))
    libc = _c()
    ruleset = _check(
        libc.syscall(_NR["landlock_create_ruleset"], buf, ctypes.c_size_t(len(attr)), 0),
        "landlock_create_ruleset",
    )
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                allowed = rights & handled
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    allowed &= _FILE_RIGHTS
                if not allowed:
                    continue
                rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
                _check(
                    libc.syscall(_NR["landlock_add_rule"], ruleset, _RULE_PATH_BENEATH, rule, 0),
                    f"landlock_add_rule({path})",
                )
            finally:
                os.close(fd)
        _check(libc.syscall(_NR["landlock_restrict_self"], ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def no_new_privs() -> None:
    """``PR_SET_NO_NEW_PRIVS``: exec can never grant privileges again (needed by seccomp and
    Landlock; Linux only)."""
    if _linux():
        prctl(_PR_SET_NO_NEW_PRIVS, 1)


# -- seccomp -----------------------------------------------------------------------------------


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_supported() -> bool:
    """True when :func:`seccomp_no_new_processes` knows this architecture's syscalls."""
    return _linux() and _MACHINE in _SECCOMP_ARCH


def seccomp_restrict(processes: bool = False) -> bool:
    """Refuse the syscalls student code never needs (``EPERM``); False if unsupported.

    Always refused: ``unshare``, ``setns``, ``ptrace``, ``process_vm_readv``/``writev``,
    ``pidfd_getfd``, ``socket``, ``socketpair`` (no network, no local services), keyrings,
    ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_setup``, ``capset``. Unless
    ``processes``: ``fork``, ``vfork`` and ``clone`` without ``CLONE_THREAD`` too (threads
    still work; ``clone3`` fails with ``ENOSYS`` so that the C library falls back to
    ``clone``). Syscalls of another ABI (32-bit ``int 0x80``, x32) are refused as a whole,
    so the filter cannot be sidestepped through them.
    """
    if not seccomp_supported():
        return False
    arch, spawn, always = _SECCOMP_ARCH[_MACHINE]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | errno.EPERM
    enosys = 0x00050000 | errno.ENOSYS
    denied = list(always.values()) + [_NR_IO_URING_SETUP, _NR_PIDFD_GETFD]
    if not processes:
        denied += [nr for name, nr in spawn.items() if name != "clone"]
    prog = [_bpf(ld, 0, 0, 4), _bpf(jeq, 1, 0, arch), _bpf(ret, 0, 0, eperm), _bpf(ld, 0, 0, 0)]
    prog += [_bpf(jge, 0, 1, 0x40000000), _bpf(ret, 0, 0, eperm)]
    for nr in denied:
        prog += [_bpf(jeq, 0, 1, nr), _bpf(ret, 0, 0, eperm)]
    if not processes:
        prog += [_bpf(jeq, 0, 1, _NR_CLONE3), _bpf(ret, 0, 0, enosys)]
        prog += [_bpf(jeq, 1, 0, spawn["clone"]), _bpf(ret, 0, 0, allow)]
        # clone: allowed only with CLONE_THREAD (a thread of this process); flags are args[0]
        prog += [_bpf(ld, 0, 0, 16), _bpf(jset, 0, 1, _CLONE_THREAD), _bpf(ret, 0, 0, allow)]
        prog += [_bpf(ret, 0, 0, eperm)]
    else:
        prog += [_bpf(ret, 0, 0, allow)]
    code = b"".join(prog)
    filt = ctypes.create_string_buffer(code, len(code))
    fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxP", len(prog), ctypes.addressof(filt)))
    prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog)
    return True


def drop_bounding_set() -> None:
    """Empty the capability bounding set (needs ``CAP_SETPCAP``: call it while still root;
    without it nothing changes, and there is nothing to drop either). Linux only."""
    if not _linux():
        return
    for cap in range(64):
        try:
            prctl(_PR_CAPBSET_DROP, cap)
        except OSError:
            break  # past the last capability this kernel knows (EINVAL), or no CAP_SETPCAP


def clear_capabilities() -> None:
    """No effective, permitted, inheritable or ambient capability left, even for uid 0: root
    without capabilities cannot load kernel modules, reboot, mount, or override file
    permissions. Linux only."""
    if not _linux():
        return
    try:
        prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    if _MACHINE in _NR_CAPSET:
        header = ctypes.create_string_buffer(struct.pack("Ii", 0x20080522, 0), 8)
        data = ctypes.create_string_buffer(b"\0" * 24, 24)
        _check(_c().syscall(_NR_CAPSET[_MACHINE], header, data), "capset")


# -- resource limits, user, mounts -------------------------------------------------------------


def set_limits(
    memory_bytes: int | None, cpu_seconds: int | None, file_bytes: int, processes: int | None
) -> None:
    """Address space, CPU time, file size, processes (``None`` = unchanged), no core files."""

    def lower(which: int, value: int) -> None:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
        except (OSError, ValueError):
            if _linux():  # other systems refuse some limits (RLIMIT_AS on macOS)
                raise

    if memory_bytes is not None:
        lower(resource.RLIMIT_AS, memory_bytes)
    if cpu_seconds is not None:
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard == resource.RLIM_INFINITY or hard > cpu_seconds:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    lower(resource.RLIMIT_FSIZE, file_bytes)
    lower(resource.RLIMIT_CORE, 0)
    lower(resource.RLIMIT_NOFILE, 256)
    if processes is not None:
        lower(resource.RLIMIT_NPROC, processes)


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good (no supplementary groups, real = effective = saved)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:  # pragma: no cover - kernel guarantees
        raise OSError(errno.EPERM, "could not change user")


def can_traverse(path: str, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` (no supplementary groups) may search directory ``path``."""
    st = os.stat(path)
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def blocked_ancestor(path: str, uid: int, gid: int) -> str | None:
    """The outermost directory above ``path`` that ``uid`` cannot search, or None."""
    parts = os.path.abspath(path).split(os.sep)[1:]
    current = "/"
    for part in parts[:-1]:
        current = os.path.join(current, part)
        if not can_traverse(current, uid, gid):
            return current
    return None


def _mount(source, target, fstype, flags, data) -> None:
    enc = [None if x is None else os.fsencode(x) for x in (source, target, fstype, data)]
    result = _c().mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3])
    _check(result, f"mount({source!r}, {target!r})")


def expose_paths(plan: list[tuple[str, str, str]]) -> None:
    """Make directories under private ancestors reachable, in a new mount namespace.

    ``plan`` holds ``(blocked, subtree, stage)``: ``blocked`` is a directory the sandbox user
    cannot search (``/root``), ``subtree`` the directory beneath it the student needs
    (``/root/.pyenv/versions/3.11.7``) and ``stage`` an empty directory used while mounting.
    ``blocked`` is covered by an empty tmpfs (hiding everything else in it) into which
    ``subtree`` is bind-mounted read-only at its original path, so paths stay the same.
    Needs ``CAP_SYS_ADMIN``; affects only this process and its children.
    """
    if not plan:
        return
    _check(_c().unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    by_blocked: dict[str, list[tuple[str, str]]] = {}
    for blocked, subtree, stage in plan:
        _mount(subtree, stage, None, _MS_BIND | _MS_REC, None)
        by_blocked.setdefault(blocked, []).append((subtree, stage))
    for blocked, entries in by_blocked.items():
        _mount("tmpfs", blocked, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=64k")
        for subtree, stage in entries:
            os.makedirs(subtree, mode=0o755, exist_ok=True)
            _mount(stage, subtree, None, _MS_BIND | _MS_REC, None)
            _mount(None, subtree, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)
    for _blocked, _subtree, stage in plan:
        _check(_c().umount2(os.fsencode(stage), _MNT_DETACH), f"umount({stage})")
