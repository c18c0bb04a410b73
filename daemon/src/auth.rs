//! Who is connecting, and what they may do: nix-daemon's rules.
//!
//! A connection's peer is identified with `SO_PEERCRED` (pid, uid, gid). Its user name is the
//! password database's name for the uid (or the number), its group the name of the primary
//! gid. `trusted-users` (default `root`) and `allowed-users` (default `*`) are lists of user
//! names, `*` (everyone) and `@group` (members of the group, by primary group or by the group
//! database's member list). Nix refuses a peer that is neither trusted nor allowed, and a peer
//! whose primary group is the `build-users-group`.

use std::os::fd::AsFd;

use thiserror::Error;

/// The credentials of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its process id (0 when unknown).
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
    /// The user's name, or the uid as a number when the password database has none.
    pub user: String,
    /// The primary group's name, or the gid as a number.
    pub group: String,
    /// Every group the user is listed in (supplementary groups by name).
    pub member_of: Vec<String>,
}

/// Why the peer's credentials could not be read.
#[derive(Debug, Error)]
#[error("cannot read the peer's credentials (SO_PEERCRED): {0}")]
pub struct PeerCredError(#[from] std::io::Error);

impl Peer {
    /// The peer at the other end of a connected Unix socket.
    pub fn of_socket(socket: &impl AsFd) -> Result<Peer, PeerCredError> {
        let cred = rustix::net::sockopt::socket_peercred(socket).map_err(std::io::Error::from)?;
        Ok(Peer::from_ids(
            cred.pid.as_raw_nonzero().get().unsigned_abs(),
            cred.uid.as_raw(),
            cred.gid.as_raw(),
        ))
    }

    /// A peer from its ids, names looked up in the user and group databases.
    pub fn from_ids(pid: u32, uid: u32, gid: u32) -> Peer {
        let user_entry = nix::unistd::User::from_uid(uid.into()).ok().flatten();
        let user = user_entry
            .as_ref()
            .map_or_else(|| uid.to_string(), |u| u.name.clone());
        let group = nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |g| g.name);
        let member_of = user_entry.map_or_else(Vec::new, |u| supplementary_groups(&u.name, gid));
        Peer {
            pid,
            uid,
            gid,
            user,
            group,
            member_of,
        }
    }

    /// Whether `list` (a `trusted-users`/`allowed-users` value) names this peer.
    pub fn matches(&self, list: &[String]) -> bool {
        list.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            match entry.strip_prefix('@') {
                Some(group) => self.group == group || self.member_of.iter().any(|g| g == group),
                None => *entry == self.user,
            }
        })
    }
}

/// The names of every group `user` belongs to (primary and supplementary, from the group
/// database through `getgrouplist`).
fn supplementary_groups(user: &str, gid: u32) -> Vec<String> {
    let Ok(name) = std::ffi::CString::new(user) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, gid.into())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| nix::unistd::Group::from_gid(g).ok().flatten())
        .map(|g| g.name)
        .collect()
}

/// What the daemon decided about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// In `trusted-users` (or forced trusted).
    Trusted,
    /// Allowed to connect, with the untrusted rules.
    Untrusted,
}

/// A peer that may not connect, in Nix's words.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    /// Neither trusted nor allowed.
    #[error("user '{0}' is not allowed to connect to the Nix daemon")]
    NotAllowed(String),
    /// A build user.
    #[error("user '{0}' is a build user and may not connect to the Nix daemon")]
    BuildUser(String),
}

/// The access rules of a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    /// `trusted-users`.
    pub trusted_users: Vec<String>,
    /// `allowed-users`.
    pub allowed_users: Vec<String>,
    /// `build-users-group` (empty when unset).
    pub build_users_group: String,
    /// `--force-trusted` / `--force-untrusted` / `--default-trust` on the command line.
    pub forced: Option<Trust>,
}

impl AccessRules {
    /// Decides whether `peer` may connect, and with which trust.
    pub fn decide(&self, peer: &Peer) -> Result<Trust, Refusal> {
        let trusted = peer.matches(&self.trusted_users);
        if !trusted && !peer.matches(&self.allowed_users) {
            return Err(Refusal::NotAllowed(peer.user.clone()));
        }
        if !self.build_users_group.is_empty() && peer.group == self.build_users_group {
            return Err(Refusal::BuildUser(peer.user.clone()));
        }
        Ok(match self.forced {
            Some(forced) => forced,
            None if trusted => Trust::Trusted,
            None => Trust::Untrusted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(user: &str, group: &str, member_of: &[&str]) -> Peer {
        Peer {
            pid: 1,
            uid: 1000,
            gid: 100,
            user: user.into(),
            group: group.into(),
            member_of: member_of.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn rules(trusted: &[&str], allowed: &[&str]) -> AccessRules {
        AccessRules {
            trusted_users: trusted.iter().map(|s| (*s).to_owned()).collect(),
            allowed_users: allowed.iter().map(|s| (*s).to_owned()).collect(),
            build_users_group: "nixbld".into(),
            forced: None,
        }
    }

    #[test]
    fn nix_matching_rules() {
        let alice = peer("alice", "users", &["wheel"]);
        assert_eq!(
            rules(&["root"], &["*"]).decide(&alice),
            Ok(Trust::Untrusted)
        );
        assert_eq!(rules(&["alice"], &[]).decide(&alice), Ok(Trust::Trusted));
        assert_eq!(rules(&["@wheel"], &[]).decide(&alice), Ok(Trust::Trusted));
        assert_eq!(rules(&["@users"], &[]).decide(&alice), Ok(Trust::Trusted));
        assert_eq!(
            rules(&["root"], &["@admins"]).decide(&alice),
            Err(Refusal::NotAllowed("alice".into()))
        );
        let builder = peer("nixbld1", "nixbld", &[]);
        assert_eq!(
            rules(&["root"], &["*"]).decide(&builder),
            Err(Refusal::BuildUser("nixbld1".into()))
        );
        let mut forced = rules(&["root"], &["*"]);
        forced.forced = Some(Trust::Trusted);
        assert_eq!(forced.decide(&alice), Ok(Trust::Trusted));
    }

    #[test]
    fn real_socket_peer_is_this_process() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let me = Peer::of_socket(&a).expect("peer credentials");
        assert_eq!(me.uid, rustix::process::getuid().as_raw());
        assert_eq!(me.pid, std::process::id());
        if me.uid == 0 {
            assert_eq!(me.user, "root");
        }
    }
}
