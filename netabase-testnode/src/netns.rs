//! Network namespaces for tests that multicast.
//!
//! mDNS sends to every interface it sees, so tests that run it put their nodes in network
//! namespaces of their own: [`Namespaces::create`] makes two, joined by a veth pair that
//! carries an IPv4 /24 (side 0 is `.1`, side 1 is `.2`), with nothing reaching the
//! machine's own network. Dropping the guard deletes both (and with them the veth pair),
//! also when the test fails; namespaces left by test processes that were killed before
//! their guards ran are deleted when the next pair is made. It needs root and iproute2's
//! `ip netns`.
//!
//! ```no_run
//! use netabase_testnode::netns::Namespaces;
//!
//! let ns = Namespaces::create().unwrap_or_else(|e| panic!("{e}"));
//! let mut node = ns.command(0, "/bin/true");
//! assert!(node.status().unwrap().success());
//! assert_eq!(ns.addr(1), "10.213.0.2");
//! ```

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The prefix of every namespace made here: `nbt<pid>x<n>a` and `nbt<pid>x<n>b`.
const PREFIX: &str = "nbt";

/// The subnet of [`Namespaces::create`]: `10.213.0.0/24`.
pub const DEFAULT_SUBNET: [u8; 3] = [10, 213, 0];

/// Why the namespaces could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip` could not run, or refused to make a namespace (not root, no iproute2).
    #[error("this test needs network namespaces (run it as root with iproute2's `ip netns`): {0}")]
    Unavailable(String),
    /// A later step (the veth pair, an address, a link) failed.
    #[error("setting up the test network: {0}")]
    Setup(String),
}

/// Runs `ip` with `args`.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two network namespaces joined by a veth pair, named after this process's id (and a
/// number, so that tests on threads of one process get pairs of their own) so that
/// parallel runs do not collide. Dropping it deletes both.
#[derive(Debug)]
pub struct Namespaces {
    names: [String; 2],
    subnet: [u8; 3],
}

impl Namespaces {
    /// Two namespaces joined by a veth pair carrying [`DEFAULT_SUBNET`] (`10.213.0.0/24`).
    pub fn create() -> Result<Namespaces, NetnsError> {
        Namespaces::create_on(DEFAULT_SUBNET)
    }

    /// Two namespaces joined by a veth pair carrying `subnet` (the first three octets of
    /// an IPv4 /24): side 0 is `<subnet>.1`, side 1 `<subnet>.2`.
    pub fn create_on(subnet: [u8; 3]) -> Result<Namespaces, NetnsError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        remove_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        let names = [format!("{PREFIX}{pid}x{n}a"), format!("{PREFIX}{pid}x{n}b")];
        // Interface names have at most 15 bytes: 3 + 7 (pid) + 2 + 1.
        let veth = [format!("nbv{pid}{n}a"), format!("nbv{pid}{n}b")];
        let [a, b, c] = subnet;
        let cidr = |i: u8| format!("{a}.{b}.{c}.{i}/24");
        let (cidr0, cidr1) = (cidr(1), cidr(2));
        // The guard exists before the first namespace does, so a failing step below still
        // removes whatever was made.
        let guard = Namespaces {
            names: names.clone(),
            subnet,
        };
        ip(&["netns", "add", &names[0]]).map_err(NetnsError::Unavailable)?;
        let steps: [&[&str]; 8] = [
            &["netns", "add", &names[1]],
            &[
                "link", "add", &veth[0], "netns", &names[0], "type", "veth", "peer", "name",
                &veth[1], "netns", &names[1],
            ],
            &["-n", &names[0], "addr", "add", &cidr0, "dev", &veth[0]],
            &["-n", &names[1], "addr", "add", &cidr1, "dev", &veth[1]],
            &["-n", &names[0], "link", "set", &veth[0], "up"],
            &["-n", &names[1], "link", "set", &veth[1], "up"],
            &["-n", &names[0], "link", "set", "lo", "up"],
            &["-n", &names[1], "link", "set", "lo", "up"],
        ];
        for step in steps {
            ip(step).map_err(NetnsError::Setup)?;
        }
        Ok(guard)
    }

    /// The name of namespace `i` (0 or 1), as `ip netns` knows it.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The file of namespace `i`, for `setns(2)` (moving a thread into it).
    pub fn path(&self, i: usize) -> PathBuf {
        Path::new("/var/run/netns").join(&self.names[i])
    }

    /// The IPv4 address of side `i` (0 or 1) on the veth pair.
    pub fn addr(&self, i: usize) -> String {
        let [a, b, c] = self.subnet;
        format!("{a}.{b}.{c}.{}", i + 1)
    }

    /// A command that runs `program` inside namespace `i` (`ip netns exec <name>
    /// <program>`); add its arguments and environment as usual.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.names[i]]).arg(program);
        command
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            if let Err(e) = ip(&["netns", "del", name]) {
                // Absent already (a setup step failed before creating it) is fine.
                if !e.contains("No such file") {
                    eprintln!("removing namespace {name}: {e}");
                }
            }
        }
    }
}

/// The process id in a namespace name made here (`nbt<pid>x<n>a|b`), if it is one.
fn owner(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('x')?;
    let n = rest.strip_suffix('a').or_else(|| rest.strip_suffix('b'))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then_some(pid)
}

/// Deletes namespaces made here by processes that no longer exist.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = owner(name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn only_names_made_here_are_claimed() {
        assert_eq!(owner("nbt1234x0a"), Some("1234"));
        assert_eq!(owner("nbt1234x17b"), Some("1234"));
        for other in [
            "nbt1234x0c",
            "nbt1234a",
            "nbtx0a",
            "nbt12x a",
            "nbx1234a",
            "ns1",
        ] {
            assert_eq!(owner(other), None, "{other}");
        }
    }
}
