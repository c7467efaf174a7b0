"""The seccomp filter every sandboxed FFmpeg and ffprobe runs under, as a BPF program.

Pure code: it returns the bytes bubblewrap loads with `--seccomp FD`. It is generated
here rather than through libseccomp because the filter is small and fixed (a deny list
and two argument checks), the bytes can be tested as they are, and it adds no C
dependency to install beside FFmpeg: the program is built once when the server starts.

What it denies was chosen against what FFmpeg and ffprobe really call: `strace -f` of
every operation on the test corpus (docs/sandbox.md lists the calls seen) shows none of
the calls below. Denied calls fail with EPERM (the process sees an ordinary error, so a
probe of a forbidden feature cannot crash FFmpeg into a misleading state), except:
- `socket` for any family but AF_UNIX: EAFNOSUPPORT (the net namespace has no interface
  anyway; this also shuts netlink and packet sockets);
- `clone` without CLONE_THREAD, `fork`, `vfork`: EPERM, so nothing can start another
  process beside FFmpeg (threads are clones with CLONE_THREAD, which pass);
- `clone3`: ENOSYS, so glibc falls back to `clone`, whose flags a filter can read;
- a call from another ABI (x32, i386) than the one the filter was built for: the
  process is killed, as syscall numbers mean something else there.

`execve` stays allowed: bubblewrap installs the filter and then has to exec FFmpeg, and
a classic BPF filter keeps no state to tell that exec from a later one. What FFmpeg
could exec is inside the same sandbox, with no more rights than FFmpeg itself had.
"""

from __future__ import annotations

import errno
import platform
import struct

# linux/filter.h, linux/seccomp.h, linux/audit.h
_LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
RET_KILL_PROCESS = 0x80000000
RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # offsets in struct seccomp_data (little-endian)
AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
AF_UNIX = 1
CLONE_THREAD = 0x00010000

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl). Only calls FFmpeg never makes.
X86_64_DENIED = {
    "fork": 57,
    "vfork": 58,
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "personality": 135,
    "ustat": 136,
    "sysfs": 139,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "_sysctl": 156,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "create_module": 174,
    "init_module": 175,
    "delete_module": 176,
    "get_kernel_syms": 177,
    "query_module": 178,
    "quotactl": 179,
    "nfsservctl": 180,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}
X86_64_SOCKET = 41
X86_64_CLONE = 56
X86_64_CLONE3 = 435


class Unsupported(Exception):
    """No filter for this machine's architecture."""


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _errno(number: int) -> int:
    return _RET_ERRNO | number


def x86_64_filter() -> bytes:
    """The filter for x86_64 (a struct sock_filter array, as `bwrap --seccomp` reads it)."""
    checks = [(X86_64_SOCKET, "socket"), (X86_64_CLONE, "clone"), (X86_64_CLONE3, "enosys")]
    checks += [(number, "eperm") for number in sorted(X86_64_DENIED.values())]
    # Blocks after the checks, each entered only by a forward jump (BPF has no other).
    blocks: dict[str, list[tuple[int, int, int, int]]] = {
        "allow": [(_RET, RET_ALLOW, 0, 0)],
        "eperm": [(_RET, _errno(errno.EPERM), 0, 0)],
        "enosys": [(_RET, _errno(errno.ENOSYS), 0, 0)],
        "socket": [  # socket(domain, ...): only AF_UNIX
            (_LD_ABS_W, _ARG0_LOW, 0, 0),
            (_JEQ, AF_UNIX, 0, 1),
            (_RET, RET_ALLOW, 0, 0),
            (_RET, _errno(errno.EAFNOSUPPORT), 0, 0),
        ],
        "clone": [  # clone(flags, ...): threads only
            (_LD_ABS_W, _ARG0_LOW, 0, 0),
            (_JSET, CLONE_THREAD, 0, 1),
            (_RET, RET_ALLOW, 0, 0),
            (_RET, _errno(errno.EPERM), 0, 0),
        ],
        "kill": [(_RET, RET_KILL_PROCESS, 0, 0)],
    }
    head_size = 5 + len(checks)  # arch load and check, kill, number load, x32 check
    at: dict[str, int] = {}
    position = head_size + 1  # after the checks falls through to one "allow"
    for name, block in blocks.items():
        at[name] = position
        position += len(block)

    def jump(index: int, label: str) -> int:
        offset = at[label] - index - 1
        assert 0 <= offset <= 255, (label, offset)
        return offset

    program = [
        _insn(_LD_ABS_W, _ARCH),
        _insn(_JEQ, AUDIT_ARCH_X86_64, jt=1),
        _insn(_RET, RET_KILL_PROCESS),
        _insn(_LD_ABS_W, _NR),
        _insn(_JGE, _X32_BIT, jt=jump(4, "kill")),
    ]
    for index, (number, label) in enumerate(checks, start=5):
        program.append(_insn(_JEQ, number, jt=jump(index, label)))
    program.append(_insn(_RET, RET_ALLOW))
    for block in blocks.values():
        program += [_insn(code, k, jt, jf) for code, k, jt, jf in block]
    return b"".join(program)


def build_filter(machine: str | None = None) -> bytes:
    """The filter for this machine. Errors: Unsupported for an architecture we have no
    syscall table for (the sandbox then runs without seccomp and says so)."""
    machine = machine or platform.machine()
    if machine in ("x86_64", "AMD64"):
        return x86_64_filter()
    raise Unsupported(f"no seccomp filter for {machine}")
