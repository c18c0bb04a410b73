//! The last walls put around a builder, right before `exec`: `no_new_privs`, a Landlock
//! ruleset and a seccomp filter. All three are irreversible for the calling thread and are
//! inherited across `fork` and `exec`.
//!
//! **Landlock** (best effort: what the running kernel's ABI supports, reported in
//! [`WallsReport`]): every filesystem right the ABI knows is handled; the whole tree is
//! readable and executable; the `writable` hierarchies (the sandbox's `/build`, `/nix/store`,
//! `/tmp`, `/dev/shm`) get every right; `/dev` additionally gets `write_file` and `ioctl_dev`
//! so `/dev/null`, `/dev/ptmx` and `/dev/pts/*` stay usable (but nothing can be created there).
//! From ABI 6 on, the builder also cannot connect to abstract unix sockets or signal processes
//! created outside its Landlock domain. TCP bind/connect (ABI 4) is deliberately not handled:
//! fixed-output builds need the network, and the network namespace already isolates the rest.
//!
//! **seccomp** mirrors the filter Nix installs (`filter-syscalls`): `chmod`, `fchmod`,
//! `fchmodat` and `fchmodat2` fail with `EPERM` when the mode carries `S_ISUID` or `S_ISGID`
//! (the store must not contain setuid/setgid files); `mknod`/`mknodat` fail with `EPERM` for
//! character and block devices; the extended-attribute calls (`setxattr`, `lsetxattr`,
//! `fsetxattr`, their `get` counterparts as Nix does, and the newer `setxattrat`/`getxattrat`)
//! fail with `ENOTSUP`, since NAR archives cannot represent xattrs or ACLs and tools like
//! `cp -a` fall back quietly on `ENOTSUP`. Everything else is allowed.
//!
//! The rules also cover the compat ABIs a process on the same machine can use (i386 and x32
//! on x86_64, 32-bit ARM on aarch64), which is what Nix gets from adding `SCMP_ARCH_X86`,
//! `SCMP_ARCH_X32` and `SCMP_ARCH_ARM`: seccompiler only knows one architecture per filter
//! and kills any process calling through another, which would kill every i686 builder. So
//! the rule bodies are compiled by seccompiler, one per ABI, with that ABI's syscall numbers,
//! and put behind a small dispatcher on `seccomp_data.arch` written here; an architecture not
//! in the table is killed, as seccompiler would.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, LandlockStatus, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope,
};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// The newest Landlock ABI this code asks for; older kernels get the subset they support.
const LANDLOCK_TARGET: ABI = ABI::V9;
/// Where device nodes live in the sandbox; opened for writing, never created in.
const DEV: &str = "/dev";

/// How much of the Landlock ruleset the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockEnforcement {
    /// Every requested right and scope is enforced.
    Full,
    /// The kernel's ABI is older than what we ask for: the rights it knows are enforced, the
    /// newer ones (see [`WallsReport::landlock_abi`]) are not.
    Partial,
    /// The kernel has no Landlock (or it is disabled): no filesystem restriction at all.
    NotEnforced,
}

/// What [`apply`] put in place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WallsReport {
    /// The Landlock ruleset's status, as the landlock crate reports it.
    pub landlock: LandlockEnforcement,
    /// The Landlock ABI version of the running kernel (0: none), capped at the newest version
    /// this code knows (9).
    pub landlock_abi: u32,
    /// Whether abstract-unix-socket and signal scoping (Landlock ABI 6) took effect.
    pub scoped: bool,
    /// `writable` paths (and `/dev`) that did not exist, so got no rule: nothing is writable
    /// there.
    pub missing: Vec<PathBuf>,
    /// The system-call ABIs the seccomp filter has rules for, native first.
    pub seccomp_abis: Vec<&'static str>,
}

/// Why the walls could not be put up. After an error the thread may be partly restricted
/// already (the steps are irreversible); the caller must not go on to `exec` the builder.
#[derive(Debug, thiserror::Error)]
pub enum WallsError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(#[source] Errno),
    /// A path to put a Landlock rule on could not be opened (other than not existing).
    #[error("opening {path} for a Landlock rule: {errno}")]
    OpenRulePath {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        errno: Errno,
    },
    /// The landlock crate refused the ruleset or the kernel refused to enforce it.
    #[error("Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// seccompiler refused a rule or the filter.
    #[error("compiling the seccomp filter: {0}")]
    SeccompCompile(#[from] seccompiler::BackendError),
    /// seccompiler's output did not have the shape the dispatcher relies on (an upgrade of the
    /// crate changed it), or the filter grew too long.
    #[error("unexpected seccomp program layout: {0}")]
    SeccompLayout(&'static str),
    /// The kernel refused the seccomp filter.
    #[error("installing the seccomp filter: {0}")]
    SeccompInstall(#[source] seccompiler::Error),
    /// There is no syscall table for the architecture this was compiled for.
    #[error("no seccomp syscall table for architecture {0}")]
    UnsupportedArch(&'static str),
}

/// Puts up all the walls on the calling thread: `no_new_privs`, then Landlock, then seccomp.
///
/// `writable` are the hierarchies the builder may write to (absolute paths, normally `/build`,
/// `/nix/store`, `/tmp`, `/dev/shm`); one that does not exist is skipped and listed in
/// [`WallsReport::missing`]. Call it single-threaded, after dropping privileges, right before
/// `exec`: the restrictions apply to this thread and everything it starts from now on, and the
/// file descriptors opened for the rules are closed before it returns.
pub fn apply<P: AsRef<Path>>(writable: &[P]) -> Result<WallsReport, WallsError> {
    rustix::thread::set_no_new_privs(true).map_err(WallsError::NoNewPrivs)?;
    // Compile first: a filter we cannot build must fail before anything irreversible.
    let abis = native_abis()?;
    let programs = [
        compile(abis, Deny::SetIdAndDevices)?,
        compile(abis, Deny::ExtendedAttributes)?,
    ];
    let mut report = restrict_filesystem(writable)?;
    for program in &programs {
        seccompiler::apply_filter(program).map_err(WallsError::SeccompInstall)?;
    }
    report.seccomp_abis = abis.iter().map(|abi| abi.name).collect();
    Ok(report)
}

/// Builds and enforces the Landlock ruleset described in the module documentation.
fn restrict_filesystem<P: AsRef<Path>>(writable: &[P]) -> Result<WallsReport, WallsError> {
    let mut missing = Vec::new();
    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(LANDLOCK_TARGET))?
        .scope(Scope::from_all(LANDLOCK_TARGET))?
        .create()?;
    let ruleset = add_rule(
        ruleset,
        Path::new("/"),
        AccessFs::from_read(LANDLOCK_TARGET),
        &mut missing,
    )?;
    let mut ruleset = add_rule(
        ruleset,
        Path::new(DEV),
        AccessFs::WriteFile | AccessFs::IoctlDev,
        &mut missing,
    )?;
    for path in writable {
        ruleset = add_rule(
            ruleset,
            path.as_ref(),
            AccessFs::from_all(LANDLOCK_TARGET),
            &mut missing,
        )?;
    }
    let status = ruleset.restrict_self()?;

    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi,
        _ => ABI::Unsupported,
    };
    let landlock = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockEnforcement::Full,
        RulesetStatus::PartiallyEnforced => LandlockEnforcement::Partial,
        _ => LandlockEnforcement::NotEnforced,
    };
    Ok(WallsReport {
        landlock,
        landlock_abi: abi_number(abi),
        scoped: landlock != LandlockEnforcement::NotEnforced && abi >= ABI::V6,
        missing,
        seccomp_abis: Vec::new(),
    })
}

/// Adds "`access` beneath `path`", or records `path` as missing if it does not exist.
fn add_rule(
    ruleset: RulesetCreated,
    path: &Path,
    access: landlock::BitFlags<AccessFs>,
    missing: &mut Vec<PathBuf>,
) -> Result<RulesetCreated, WallsError> {
    let fd: OwnedFd = match rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            missing.push(path.to_path_buf());
            return Ok(ruleset);
        }
        Err(errno) => {
            return Err(WallsError::OpenRulePath {
                path: path.to_path_buf(),
                errno,
            });
        }
    };
    // The descriptor is only needed while the rule is added; it is closed on return.
    Ok(ruleset.add_rule(PathBeneath::new(fd, access))?)
}

/// The ABI as its version number (the enum is non-exhaustive, so no `as` cast).
fn abi_number(abi: ABI) -> u32 {
    match abi {
        ABI::Unsupported => 0,
        ABI::V1 => 1,
        ABI::V2 => 2,
        ABI::V3 => 3,
        ABI::V4 => 4,
        ABI::V5 => 5,
        ABI::V6 => 6,
        ABI::V7 => 7,
        ABI::V8 => 8,
        ABI::V9 => 9,
        // A version this code does not know yet is at least the newest it knows.
        _ => 9,
    }
}

// ---------------------------------------------------------------------------------------------
// seccomp

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE` (x32 shares it).
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_I386`.
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_AARCH64`.
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
/// `AUDIT_ARCH_ARM` (EABI, little endian).
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
/// `AUDIT_ARCH_RISCV64`.
const AUDIT_ARCH_RISCV64: u32 = 0xC000_00F3;
/// x32 system calls are the x86_64 ones with this bit set (all the calls below are "common").
const X32: i64 = 0x4000_0000;

/// One system-call ABI and the numbers of the calls the filter restricts in it. Numbers are
/// from the kernel's syscall tables (`arch/*/entry/syscalls/*.tbl`, `include/uapi/asm-generic/
/// unistd.h`); a test checks the native ones against `libc::SYS_*`.
struct SyscallAbi {
    /// A name for reports.
    name: &'static str,
    /// `seccomp_data.arch` for calls made through this ABI.
    audit_arch: u32,
    /// chmod-like calls: (number, index of the mode argument).
    chmod: &'static [(i64, u8)],
    /// mknod-like calls: (number, index of the mode argument).
    mknod: &'static [(i64, u8)],
    /// Extended-attribute calls, denied whatever their arguments.
    xattr: &'static [i64],
}

/// x86_64, with the x32 numbers alongside (same `audit_arch`).
const ABI_X86_64: SyscallAbi = SyscallAbi {
    name: "x86_64+x32",
    audit_arch: AUDIT_ARCH_X86_64,
    // chmod, fchmod, fchmodat, fchmodat2
    chmod: &[
        (90, 1),
        (91, 1),
        (268, 2),
        (452, 2),
        (X32 + 90, 1),
        (X32 + 91, 1),
        (X32 + 268, 2),
        (X32 + 452, 2),
    ],
    // mknod, mknodat
    mknod: &[(133, 1), (259, 2), (X32 + 133, 1), (X32 + 259, 2)],
    // setxattr, lsetxattr, fsetxattr, getxattr, lgetxattr, fgetxattr, setxattrat, getxattrat
    xattr: &[
        188,
        189,
        190,
        191,
        192,
        193,
        463,
        464,
        X32 + 188,
        X32 + 189,
        X32 + 190,
        X32 + 191,
        X32 + 192,
        X32 + 193,
        X32 + 463,
        X32 + 464,
    ],
};

/// i386, as 32-bit processes on x86_64 use it.
const ABI_I386: SyscallAbi = SyscallAbi {
    name: "i386",
    audit_arch: AUDIT_ARCH_I386,
    chmod: &[(15, 1), (94, 1), (306, 2), (452, 2)],
    mknod: &[(14, 1), (297, 2)],
    xattr: &[226, 227, 228, 229, 230, 231, 463, 464],
};

/// The generic table (aarch64, riscv64): no `chmod` nor `mknod`, only the `*at` forms.
const GENERIC_CHMOD: &[(i64, u8)] = &[(52, 1), (53, 2), (452, 2)];
/// `mknodat` in the generic table.
const GENERIC_MKNOD: &[(i64, u8)] = &[(33, 2)];
/// The xattr calls in the generic table.
const GENERIC_XATTR: &[i64] = &[5, 6, 7, 8, 9, 10, 463, 464];

/// aarch64.
const ABI_AARCH64: SyscallAbi = SyscallAbi {
    name: "aarch64",
    audit_arch: AUDIT_ARCH_AARCH64,
    chmod: GENERIC_CHMOD,
    mknod: GENERIC_MKNOD,
    xattr: GENERIC_XATTR,
};

/// 32-bit ARM (EABI), as 32-bit processes on aarch64 use it.
const ABI_ARM: SyscallAbi = SyscallAbi {
    name: "arm",
    audit_arch: AUDIT_ARCH_ARM,
    chmod: &[(15, 1), (94, 1), (333, 2), (452, 2)],
    mknod: &[(14, 1), (324, 2)],
    xattr: &[226, 227, 228, 229, 230, 231, 463, 464],
};

/// riscv64.
const ABI_RISCV64: SyscallAbi = SyscallAbi {
    name: "riscv64",
    audit_arch: AUDIT_ARCH_RISCV64,
    chmod: GENERIC_CHMOD,
    mknod: GENERIC_MKNOD,
    xattr: GENERIC_XATTR,
};

/// The ABIs of an x86_64 machine.
const X86_64_ABIS: &[SyscallAbi] = &[ABI_X86_64, ABI_I386];
/// The ABIs of an aarch64 machine.
const AARCH64_ABIS: &[SyscallAbi] = &[ABI_AARCH64, ABI_ARM];
/// The ABIs of a riscv64 machine.
const RISCV64_ABIS: &[SyscallAbi] = &[ABI_RISCV64];

/// The ABIs a process on this machine can make system calls through, native first.
fn native_abis() -> Result<&'static [SyscallAbi], WallsError> {
    abis_for(std::env::consts::ARCH)
}

/// The ABIs of architecture `arch` (a `std::env::consts::ARCH` value).
fn abis_for(arch: &'static str) -> Result<&'static [SyscallAbi], WallsError> {
    match arch {
        "x86_64" => Ok(X86_64_ABIS),
        "aarch64" => Ok(AARCH64_ABIS),
        "riscv64" => Ok(RISCV64_ABIS),
        other => Err(WallsError::UnsupportedArch(other)),
    }
}

/// The two kinds of rule, installed as two filters because a seccompiler filter has a single
/// on-match action (the kernel runs both and the error wins over allow).
#[derive(Debug, Clone, Copy)]
enum Deny {
    /// setuid/setgid modes and device nodes: `EPERM`.
    SetIdAndDevices,
    /// Extended attributes: `ENOTSUP`.
    ExtendedAttributes,
}

// Classic BPF opcodes (linux/bpf_common.h).
/// `BPF_LD | BPF_W | BPF_ABS`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JA`.
const JA: u16 = 0x05;
/// `BPF_RET | BPF_K`.
const RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, arch)`.
const SECCOMP_DATA_ARCH: u32 = 4;
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const BPF_MAX_LEN: usize = 4096;

/// One complete filter for `deny`: the arch dispatcher followed by one body per ABI.
fn compile(abis: &[SyscallAbi], deny: Deny) -> Result<BpfProgram, WallsError> {
    let mut bodies = Vec::with_capacity(abis.len());
    for abi in abis {
        bodies.push((abi.audit_arch, compile_body(abi, deny)?));
    }
    dispatch(&bodies)
}

/// The seccompiler-compiled rules of `deny` for one ABI, without seccompiler's arch check.
fn compile_body(abi: &SyscallAbi, deny: Deny) -> Result<BpfProgram, WallsError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let errno = match deny {
        Deny::SetIdAndDevices => {
            for &(nr, arg) in abi.chmod {
                for bit in [libc::S_ISUID, libc::S_ISGID] {
                    rules.entry(nr).or_default().push(mode_rule(arg, bit, bit)?);
                }
            }
            for &(nr, arg) in abi.mknod {
                for kind in [libc::S_IFCHR, libc::S_IFBLK] {
                    rules
                        .entry(nr)
                        .or_default()
                        .push(mode_rule(arg, libc::S_IFMT, kind)?);
                }
            }
            libc::EPERM
        }
        Deny::ExtendedAttributes => {
            for &nr in abi.xattr {
                // No rule: the call matches whatever its arguments.
                rules.insert(nr, Vec::new());
            }
            libc::ENOTSUP
        }
    };
    let errno = u32::try_from(errno).map_err(|_| WallsError::SeccompLayout("negative errno"))?;
    // The target architecture only decides the arch check seccompiler puts in front, which
    // `strip_arch_check` removes; the body depends only on the numbers given here.
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        TargetArch::x86_64,
    )?;
    let program = BpfProgram::try_from(filter)?;
    strip_arch_check(program, AUDIT_ARCH_X86_64)
}

/// "Argument `arg`, as a 32-bit mode, masked with `mask`, equals `value`."
fn mode_rule(arg: u8, mask: libc::mode_t, value: libc::mode_t) -> Result<SeccompRule, WallsError> {
    let condition = SeccompCondition::new(
        arg,
        // mode_t is 32 bits: the kernel ignores the upper half of the register, so must we.
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(u64::from(mask)),
        u64::from(value),
    )?;
    Ok(SeccompRule::new(vec![condition])?)
}

/// Removes the three instructions seccompiler starts every filter with ("load arch; if it is
/// not `audit_arch`, kill the process"), after checking they are exactly that.
fn strip_arch_check(program: BpfProgram, audit_arch: u32) -> Result<BpfProgram, WallsError> {
    let expected = [
        insn(LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        insn(JEQ_K, 1, 0, audit_arch),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    match program.get(..expected.len()) {
        Some(prefix) if prefix == expected => {
            Ok(program.get(expected.len()..).unwrap_or_default().to_vec())
        }
        _ => Err(WallsError::SeccompLayout(
            "seccompiler's filter does not start with its arch check",
        )),
    }
}

/// The dispatcher: load `seccomp_data.arch`, jump to the body of that ABI, kill the process
/// for any other architecture. Bodies all end in a `RET`, so they never fall into each other.
fn dispatch(bodies: &[(u32, BpfProgram)]) -> Result<BpfProgram, WallsError> {
    let too_long = || WallsError::SeccompLayout("seccomp filter longer than the kernel allows");
    let header_len = 2 + 2 * bodies.len();
    let total = header_len + bodies.iter().map(|(_, body)| body.len()).sum::<usize>();
    if total > BPF_MAX_LEN {
        return Err(too_long());
    }
    let mut program = Vec::with_capacity(total);
    program.push(insn(LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH));
    let mut body_start = header_len;
    for (audit_arch, body) in bodies {
        // if arch == audit_arch { goto body } (the unconditional jump has a 32-bit offset;
        // the conditional ones only 8 bits).
        program.push(insn(JEQ_K, 0, 1, *audit_arch));
        let offset = body_start
            .checked_sub(program.len() + 1)
            .ok_or_else(too_long)?;
        program.push(insn(
            JA,
            0,
            0,
            u32::try_from(offset).map_err(|_| too_long())?,
        ));
        body_start += body.len();
    }
    program.push(insn(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS));
    for (_, body) in bodies {
        program.extend_from_slice(body);
    }
    Ok(program)
}

/// One BPF instruction.
fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File, OpenOptions};
    use std::io::{self, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::process::Command;

    // ---- the compiled programs, run through a small classic-BPF interpreter -------------

    /// `SECCOMP_RET_ALLOW`.
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    /// `SECCOMP_RET_ERRNO | EPERM`.
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    /// `SECCOMP_RET_ERRNO | ENOTSUP`.
    const ENOTSUP: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOTSUP as u32;
    /// `SECCOMP_RET_KILL_PROCESS`.
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    /// A `struct seccomp_data` as the kernel lays it out.
    fn seccomp_data(arch: u32, nr: i64, args: [u64; 6]) -> [u8; 64] {
        let mut data = [0u8; 64];
        let nr = i32::try_from(nr).expect("syscall number fits an int");
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        data
    }

    /// Runs `program` on `data` the way the kernel would, for the instructions seccompiler
    /// and the dispatcher emit (anything else is an error, so new opcodes get noticed).
    fn run(program: &[sock_filter], data: &[u8; 64]) -> Result<u32, String> {
        let mut pc = 0usize;
        let mut acc = 0u32;
        // Classic BPF only jumps forward, so a program ends within its length in steps.
        for _ in 0..=program.len() {
            let i = program
                .get(pc)
                .ok_or(format!("jumped out of the program to {pc}"))?;
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let at = i.k as usize;
                    let word = data
                        .get(at..at + 4)
                        .ok_or(format!("load out of range: {at}"))?;
                    acc = u32::from_ne_bytes(word.try_into().map_err(|_| "load")?);
                }
                // BPF_ALU | BPF_AND | BPF_K
                0x54 => acc &= i.k,
                JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                JA => pc += i.k as usize,
                RET_K => return Ok(i.k),
                other => return Err(format!("opcode {other:#x} not interpreted")),
            }
        }
        Err("program did not terminate".into())
    }

    /// Both filters' verdicts on one call, combined as the kernel does (most restrictive).
    fn verdict(abis: &[SyscallAbi], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let data = seccomp_data(arch, nr, args);
        let results: Vec<u32> = [Deny::SetIdAndDevices, Deny::ExtendedAttributes]
            .into_iter()
            .map(|deny| {
                let program = compile(abis, deny).expect("compiles");
                run(&program, &data).expect("runs")
            })
            .collect();
        // KILL_PROCESS (0x8000_0000) > ERRNO (0x0005_xxxx) > ALLOW (0x7fff_0000) in precedence.
        if results.contains(&KILL) {
            KILL
        } else {
            results.into_iter().find(|&r| r != ALLOW).unwrap_or(ALLOW)
        }
    }

    /// Arguments with `mode` at `index` and junk elsewhere.
    fn with_mode(index: u8, mode: u64) -> [u64; 6] {
        let mut args = [0xdead_beef_u64; 6];
        args[usize::from(index)] = mode;
        args
    }

    #[test]
    fn every_abi_denies_setid_modes_devices_and_xattrs_and_nothing_else() {
        for (machine, abis) in [
            ("x86_64", X86_64_ABIS),
            ("aarch64", AARCH64_ABIS),
            ("riscv64", RISCV64_ABIS),
        ] {
            for abi in abis {
                let arch = abi.audit_arch;
                let ctx = |what: &str| format!("{machine}/{}: {what}", abi.name);
                for &(nr, arg) in abi.chmod {
                    for (mode, expected) in [
                        (0o4755, EPERM),
                        (0o2755, EPERM),
                        (0o6755, EPERM),
                        (0o104_755, EPERM), // file-type bits do not hide it
                        (0xffff_ffff_0000_0000 | 0o4755, EPERM),
                        (0o755, ALLOW),
                        (0o1777, ALLOW), // sticky is fine
                        (0o777, ALLOW),
                        // Bits the kernel ignores (upper half) cannot fake a setuid bit.
                        (0x0000_0800_0000_0000 | 0o755, ALLOW),
                        (0xffff_ffff_0000_0000 | 0o755, ALLOW),
                    ] {
                        let got = verdict(abis, arch, nr, with_mode(arg, mode));
                        assert_eq!(
                            got,
                            expected,
                            "{}",
                            ctx(&format!("chmod-like {nr} mode {mode:#o}"))
                        );
                    }
                    // The mode is looked for in the right argument only.
                    let other = if arg == 1 { 2 } else { 1 };
                    let mut args = with_mode(other, 0o4755);
                    args[usize::from(arg)] = 0o755;
                    assert_eq!(
                        verdict(abis, arch, nr, args),
                        ALLOW,
                        "{}",
                        ctx("mode in another argument")
                    );
                }
                for &(nr, arg) in abi.mknod {
                    for (mode, expected) in [
                        (u64::from(libc::S_IFCHR | 0o600), EPERM),
                        (u64::from(libc::S_IFBLK | 0o600), EPERM),
                        (u64::from(libc::S_IFIFO | 0o600), ALLOW),
                        (u64::from(libc::S_IFREG | 0o600), ALLOW),
                        (u64::from(libc::S_IFSOCK | 0o600), ALLOW),
                        (0o600, ALLOW),
                    ] {
                        let got = verdict(abis, arch, nr, with_mode(arg, mode));
                        assert_eq!(
                            got,
                            expected,
                            "{}",
                            ctx(&format!("mknod-like {nr} mode {mode:#o}"))
                        );
                    }
                }
                for &nr in abi.xattr {
                    assert_eq!(
                        verdict(abis, arch, nr, [0; 6]),
                        ENOTSUP,
                        "{}",
                        ctx(&format!("xattr {nr}"))
                    );
                }
                // Some call none of the rules name (0: read on x86_64/i386/arm, io_setup on
                // the generic table), with setuid-looking arguments everywhere.
                assert_eq!(
                    verdict(abis, arch, 0, [0o6755; 6]),
                    ALLOW,
                    "{}",
                    ctx("unrelated call")
                );
            }
            // An architecture this machine does not have is killed, as seccompiler does.
            assert_eq!(
                verdict(abis, 0x1234_5678, 90, [0; 6]),
                KILL,
                "{machine}: unknown arch"
            );
        }
    }

    #[test]
    fn numbers_are_read_in_the_abi_of_the_call() {
        // 90 is chmod on x86_64 but (old) mmap on i386; 15 is chmod on i386 but rt_sigreturn on
        // x86_64. A setuid-looking argument must only matter where the number means chmod.
        assert_eq!(
            verdict(X86_64_ABIS, AUDIT_ARCH_X86_64, 90, with_mode(1, 0o4755)),
            EPERM
        );
        assert_eq!(
            verdict(X86_64_ABIS, AUDIT_ARCH_I386, 90, with_mode(1, 0o4755)),
            ALLOW
        );
        assert_eq!(
            verdict(X86_64_ABIS, AUDIT_ARCH_I386, 15, with_mode(1, 0o4755)),
            EPERM
        );
        assert_eq!(
            verdict(X86_64_ABIS, AUDIT_ARCH_X86_64, 15, with_mode(1, 0o4755)),
            ALLOW
        );
        // x32 calls carry the x32 bit on top of the x86_64 number.
        assert_eq!(
            verdict(
                X86_64_ABIS,
                AUDIT_ARCH_X86_64,
                X32 + 90,
                with_mode(1, 0o2755)
            ),
            EPERM
        );
        assert_eq!(
            verdict(X86_64_ABIS, AUDIT_ARCH_X86_64, X32 + 188, [0; 6]),
            ENOTSUP
        );
        // On aarch64, 53 is fchmodat (mode in argument 2); arm's fchmodat is 333.
        assert_eq!(
            verdict(AARCH64_ABIS, AUDIT_ARCH_AARCH64, 53, with_mode(2, 0o4755)),
            EPERM
        );
        assert_eq!(
            verdict(AARCH64_ABIS, AUDIT_ARCH_ARM, 333, with_mode(2, 0o4755)),
            EPERM
        );
        assert_eq!(
            verdict(AARCH64_ABIS, AUDIT_ARCH_ARM, 53, with_mode(2, 0o4755)),
            ALLOW
        );
        // An x86_64 filter kills aarch64 calls and the other way round.
        assert_eq!(verdict(X86_64_ABIS, AUDIT_ARCH_AARCH64, 0, [0; 6]), KILL);
        assert_eq!(verdict(AARCH64_ABIS, AUDIT_ARCH_X86_64, 0, [0; 6]), KILL);
    }

    #[test]
    fn native_numbers_match_libc() {
        let abis = native_abis().expect("this architecture has a table");
        let native = &abis[0];
        let chmod: Vec<i64> = native.chmod.iter().map(|&(nr, _)| nr).collect();
        let mknod: Vec<i64> = native.mknod.iter().map(|&(nr, _)| nr).collect();
        #[cfg(target_arch = "x86_64")]
        {
            assert!(chmod.contains(&libc::SYS_chmod));
            assert!(mknod.contains(&libc::SYS_mknod));
            assert!(chmod.contains(&libc::SYS_fchmodat2));
        }
        for nr in [libc::SYS_fchmod, libc::SYS_fchmodat] {
            assert!(chmod.contains(&nr), "{nr}");
        }
        assert!(mknod.contains(&libc::SYS_mknodat));
        for nr in [
            libc::SYS_setxattr,
            libc::SYS_lsetxattr,
            libc::SYS_fsetxattr,
            libc::SYS_getxattr,
            libc::SYS_lgetxattr,
            libc::SYS_fgetxattr,
        ] {
            assert!(native.xattr.contains(&nr), "{nr}");
        }
    }

    #[test]
    fn a_changed_seccompiler_layout_is_an_error_not_a_wrong_filter() {
        let program = vec![insn(RET_K, 0, 0, ALLOW)];
        assert!(matches!(
            strip_arch_check(program, AUDIT_ARCH_X86_64),
            Err(WallsError::SeccompLayout(_))
        ));
        assert!(matches!(
            abis_for("sparc64"),
            Err(WallsError::UnsupportedArch("sparc64"))
        ));
    }

    // ---- the real thing, in a child process ------------------------------------------------

    /// Set in the re-executed test binary: "apply the walls and run the checks".
    const CHILD_ENV: &str = "PKGCHAIN_WALLS_TEST_CHILD";
    /// The writable directory the parent prepared.
    const WRITABLE_ENV: &str = "PKGCHAIN_WALLS_TEST_WRITABLE";
    /// A directory outside every writable path, with a file `file` in it.
    const OUTSIDE_ENV: &str = "PKGCHAIN_WALLS_TEST_OUTSIDE";
    /// A writable path that does not exist.
    const MISSING: &str = "/nonexistent-pkgchain-walls-test";

    /// Every check the child reports; each must print `check <name>: ok` (or `skipped`, for
    /// the Landlock ones on a kernel without Landlock and the scope ones before ABI 6).
    const CHECKS: &[&str] = &[
        "no_new_privs",
        "chmod-setuid",
        "fchmodat-setgid",
        "fchmod-setuid",
        "chmod-plain",
        "mknod-char",
        "mknod-block",
        "mknod-fifo",
        "setxattr",
        "getxattr",
        "read-outside",
        "write-outside",
        "create-outside",
        "remove-outside",
        "write-inside",
        "dev-null",
        "dev-ptmx",
        "dev-create",
        "exec-shell",
        "missing-reported",
        "unix-socket-inside",
        "scope-signal",
        "scope-abstract-socket",
    ];

    fn ok(name: &str) {
        println!("walls-child: check {name}: ok");
    }

    fn skipped(name: &str, why: &str) {
        println!("walls-child: check {name}: skipped ({why})");
    }

    fn expect_errno<T: std::fmt::Debug>(name: &str, result: io::Result<T>, errno: i32) {
        match result {
            Err(e) if e.raw_os_error() == Some(errno) => ok(name),
            other => panic!("{name}: expected errno {errno}, got {other:?}"),
        }
    }

    fn expect_ok<T>(name: &str, result: io::Result<T>) -> T {
        match result {
            Ok(value) => value,
            Err(e) => panic!("{name}: {e}"),
        }
    }

    fn child_checks() {
        let writable = PathBuf::from(std::env::var_os(WRITABLE_ENV).expect("writable dir"));
        let outside = PathBuf::from(std::env::var_os(OUTSIDE_ENV).expect("outside dir"));
        let target = writable.join("target");
        fs::write(&target, b"x").expect("target file");

        // Before the walls: what must stop working afterwards does work now.
        let parent = rustix::process::getppid().expect("a parent");
        rustix::process::test_kill_process(parent).expect("signal 0 to the parent before");
        let abstract_name = format!("pkgchain-walls-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("name");
        let _abstract_listener = UnixListener::bind_addr(&abstract_addr).expect("abstract bind");
        UnixStream::connect_addr(&abstract_addr).expect("abstract connect before");

        let report = apply(&[writable.as_path(), Path::new(MISSING)]).expect("walls apply");
        println!(
            "walls-child: report {}",
            serde_json::to_string(&report).expect("json")
        );
        let landlock = report.landlock_abi > 0;

        // no_new_privs
        assert!(
            rustix::thread::no_new_privs().expect("prctl"),
            "no_new_privs"
        );
        ok("no_new_privs");

        // seccomp: setuid/setgid bits. std goes through libc's chmod, rustix through the
        // fchmodat and fchmod system calls.
        let setuid = fs::Permissions::from_mode(0o4755);
        expect_errno(
            "chmod-setuid",
            fs::set_permissions(&target, setuid),
            libc::EPERM,
        );
        let setgid = Mode::from_raw_mode(0o2755);
        expect_errno(
            "fchmodat-setgid",
            rustix::fs::chmod(&target, setgid).map_err(io::Error::from),
            libc::EPERM,
        );
        let file = File::open(&target).expect("open target");
        let setuid = Mode::from_raw_mode(0o4755);
        expect_errno(
            "fchmod-setuid",
            rustix::fs::fchmod(&file, setuid).map_err(io::Error::from),
            libc::EPERM,
        );
        expect_ok(
            "chmod-plain",
            rustix::fs::chmod(&target, Mode::from_raw_mode(0o700)).map_err(io::Error::from),
        );
        expect_ok(
            "chmod-plain",
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755)),
        );
        let mode = fs::metadata(&target).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o755, "chmod-plain");
        ok("chmod-plain");

        // seccomp: device nodes (as root these would succeed without the filter).
        let cwd = rustix::fs::CWD;
        let dev = rustix::fs::makedev(1, 3);
        let rw = Mode::from_raw_mode(0o600);
        let node = |kind, name: &str| {
            rustix::fs::mknodat(cwd, writable.join(name), kind, rw, dev).map_err(io::Error::from)
        };
        expect_errno(
            "mknod-char",
            node(rustix::fs::FileType::CharacterDevice, "char"),
            libc::EPERM,
        );
        expect_errno(
            "mknod-block",
            node(rustix::fs::FileType::BlockDevice, "block"),
            libc::EPERM,
        );
        expect_ok("mknod-fifo", node(rustix::fs::FileType::Fifo, "fifo"));
        ok("mknod-fifo");

        // seccomp: extended attributes.
        let xattr_flags = rustix::fs::XattrFlags::empty();
        let set = rustix::fs::setxattr(&target, "user.pkgchain", b"1", xattr_flags);
        expect_errno("setxattr", set.map_err(io::Error::from), libc::ENOTSUP);
        let mut value = [0u8; 16];
        let get = rustix::fs::getxattr(&target, "user.pkgchain", &mut value[..]);
        expect_errno("getxattr", get.map_err(io::Error::from), libc::ENOTSUP);

        // Landlock: outside the writable paths, read only (as root, only Landlock says no).
        let outside_file = outside.join("file");
        type Attempt<'a> = Box<dyn Fn() -> io::Result<()> + 'a>;
        let landlock_checks: [(&str, Attempt, Option<i32>); 4] = [
            (
                "read-outside",
                Box::new(|| fs::read(&outside_file).map(drop)),
                None,
            ),
            (
                "write-outside",
                Box::new(|| OpenOptions::new().write(true).open(&outside_file).map(drop)),
                Some(libc::EACCES),
            ),
            (
                "create-outside",
                Box::new(|| File::create(outside.join("new")).map(drop)),
                Some(libc::EACCES),
            ),
            (
                "remove-outside",
                Box::new(|| fs::remove_file(&outside_file)),
                Some(libc::EACCES),
            ),
        ];
        for (name, attempt, errno) in landlock_checks {
            match (landlock, errno) {
                (_, None) => {
                    expect_ok(name, attempt());
                    ok(name);
                }
                (true, Some(errno)) => expect_errno(name, attempt(), errno),
                (false, Some(_)) => skipped(name, "kernel without Landlock"),
            }
        }

        // Inside: create, write, truncate, rename across directories, remove.
        let inside = || -> io::Result<()> {
            let new = writable.join("new");
            File::create(&new)?.write_all(b"hello")?;
            File::create(&new)?.write_all(b"hi")?; // O_TRUNC
            fs::create_dir(writable.join("sub"))?;
            fs::rename(&new, writable.join("sub/renamed"))?;
            assert_eq!(fs::read(writable.join("sub/renamed"))?, b"hi");
            fs::remove_file(writable.join("sub/renamed"))?;
            fs::remove_dir(writable.join("sub"))
        };
        expect_ok("write-inside", inside());
        ok("write-inside");

        // /dev: devices can be written to, nothing can be created.
        let null = OpenOptions::new().write(true).open("/dev/null");
        expect_ok("dev-null", null.and_then(|mut null| null.write_all(b"x")));
        ok("dev-null");
        match OpenOptions::new().read(true).write(true).open("/dev/ptmx") {
            Ok(_) => ok("dev-ptmx"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => skipped("dev-ptmx", "no /dev/ptmx"),
            Err(e) => panic!("dev-ptmx: {e}"),
        }
        let dev_file = PathBuf::from(format!("/dev/pkgchain-walls-test-{}", std::process::id()));
        if landlock {
            let created = File::create(&dev_file);
            if created.is_ok() {
                // Do not leave litter in the host's /dev before failing.
                let _ = fs::remove_file(&dev_file);
            }
            expect_errno("dev-create", created, libc::EACCES);
        } else {
            skipped("dev-create", "kernel without Landlock");
        }

        // A child process inherits all of it: exec works, `>` to /dev/null (O_TRUNC on a
        // device) works, writing inside works, writing outside does not.
        let script = r#"echo x > /dev/null && echo y > "$1/from-sh" && ! (echo z > "$2/from-sh") 2>/dev/null"#;
        let outside_arg = if landlock {
            outside.as_os_str()
        } else {
            Path::new("/nonexistent/dir").as_os_str()
        };
        let status = expect_ok(
            "exec-shell",
            Command::new("/bin/sh")
                .args(["-c", script, "sh"])
                .arg(&writable)
                .arg(outside_arg)
                .status(),
        );
        assert!(status.success(), "exec-shell: {status}");
        assert_eq!(fs::read(writable.join("from-sh")).expect("from-sh"), b"y\n");
        ok("exec-shell");

        assert_eq!(
            report.missing,
            vec![PathBuf::from(MISSING)],
            "missing-reported"
        );
        ok("missing-reported");

        // Pathname sockets beneath a writable path work.
        let socket_path = writable.join("socket");
        let listener = expect_ok("unix-socket-inside", UnixListener::bind(&socket_path));
        expect_ok("unix-socket-inside", UnixStream::connect(&socket_path));
        drop(listener);
        ok("unix-socket-inside");

        // Scoping (ABI 6): no signals or abstract sockets across the domain's border.
        if report.scoped {
            let signal = rustix::process::test_kill_process(parent).map_err(io::Error::from);
            expect_errno("scope-signal", signal, libc::EPERM);
            expect_errno(
                "scope-abstract-socket",
                UnixStream::connect_addr(&abstract_addr),
                libc::EPERM,
            );
        } else {
            assert!(
                report.landlock_abi < 6,
                "ABI {} but not scoped",
                report.landlock_abi
            );
            skipped("scope-signal", "Landlock ABI < 6");
            skipped("scope-abstract-socket", "Landlock ABI < 6");
        }
    }

    #[test]
    fn walls_hold_in_a_child_process() {
        if std::env::var_os(CHILD_ENV).is_some() {
            child_checks();
            return;
        }
        let writable = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("file"), b"outside").expect("outside file");

        let exe = std::env::current_exe().expect("current_exe");
        let name = concat!(module_path!(), "::walls_hold_in_a_child_process");
        let name = name.split_once("::").map_or(name, |(_, rest)| rest);
        let output = Command::new(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env(WRITABLE_ENV, writable.path())
            .env(OUTSIDE_ENV, outside.path())
            .output()
            .expect("running the child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        // (libtest prints the test's name on the same line, before the report.)
        for line in stdout.lines() {
            if let Some(at) = line.find("walls-child: report") {
                eprintln!("{}", &line[at..]);
            }
        }
        for check in CHECKS {
            let ok_line = format!("walls-child: check {check}: ok");
            let skip_line = format!("walls-child: check {check}: skipped");
            assert!(
                stdout.contains(&ok_line) || stdout.contains(&skip_line),
                "no result for {check}:\n{stdout}"
            );
            if stdout.contains(&skip_line) {
                eprintln!("note: {check} skipped on this kernel");
            }
        }

        // And from the outside: nothing the child was refused happened.
        let target = writable.path().join("target");
        let mode = fs::metadata(&target).expect("target").permissions().mode();
        assert_eq!(
            mode & 0o7000,
            0,
            "no setuid/setgid bits on {}",
            target.display()
        );
        assert!(!writable.path().join("char").exists());
        assert!(!writable.path().join("block").exists());
        assert_eq!(
            fs::read(outside.path().join("file")).expect("outside file"),
            b"outside"
        );
        if stdout.contains("walls-child: check write-outside: ok") {
            assert!(!outside.path().join("new").exists());
            assert!(!outside.path().join("from-sh").exists());
        }
    }
}
