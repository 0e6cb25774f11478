//! Limits on open streams: in all, per user and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::Error;

/// Counts open streams and refuses new ones past the configured limits
/// (each 0 for no limit).
#[derive(Debug)]
pub struct StreamLimits {
    max_total: usize,
    max_per_user: usize,
    max_per_ip: usize,
    open: Mutex<OpenStreams>,
}

#[derive(Debug, Default)]
struct OpenStreams {
    total: usize,
    by_user: HashMap<String, usize>,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted stream; dropping it frees its place.
#[derive(Debug)]
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    user: Option<String>,
    ip: Option<IpAddr>,
}

impl StreamLimits {
    pub fn new(max_total: usize, max_per_user: usize, max_per_ip: usize) -> Arc<StreamLimits> {
        Arc::new(StreamLimits {
            max_total,
            max_per_user,
            max_per_ip,
            open: Mutex::new(OpenStreams::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenStreams> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a stream for `user` (none for anonymous callers) from `ip`, or
    /// says which limit is reached (429).
    pub fn admit(
        self: &Arc<Self>,
        user: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<StreamPermit, Error> {
        let reached = |open: usize, max: usize| max != 0 && open >= max;
        let mut open = self.lock();
        if reached(open.total, self.max_total) {
            return Err(Error::TooManyStreams(format!(
                "the server has {} open streams, its limit",
                self.max_total
            )));
        }
        if let Some(user) = user
            && reached(
                open.by_user.get(user).copied().unwrap_or(0),
                self.max_per_user,
            )
        {
            return Err(Error::TooManyStreams(format!(
                "this user has {} open streams, the limit per user; close one first",
                self.max_per_user
            )));
        }
        if let Some(ip) = ip
            && reached(open.by_ip.get(&ip).copied().unwrap_or(0), self.max_per_ip)
        {
            return Err(Error::TooManyStreams(format!(
                "this address has {} open streams, the limit per address; close one first",
                self.max_per_ip
            )));
        }
        open.total += 1;
        if let Some(user) = user {
            *open.by_user.entry(user.to_owned()).or_default() += 1;
        }
        if let Some(ip) = ip {
            *open.by_ip.entry(ip).or_default() += 1;
        }
        Ok(StreamPermit {
            limits: self.clone(),
            user: user.map(str::to_owned),
            ip,
        })
    }

    /// Open streams, and who holds them.
    pub fn counts(&self) -> OpenCounts {
        let open = self.lock();
        OpenCounts {
            total: open.total,
            authenticated: open.by_user.values().sum(),
            unique_users: open.by_user.len(),
        }
    }
}

/// Open streams, and who holds them.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct OpenCounts {
    pub total: usize,
    /// Held by signed-in callers.
    pub authenticated: usize,
    /// Distinct signed-in callers.
    pub unique_users: usize,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total -= 1;
        fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
        if let Some(user) = &self.user {
            release(&mut open.by_user, user);
        }
        if let Some(ip) = &self.ip {
            release(&mut open.by_ip, ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_refuses_past_its_count_and_frees_on_drop() {
        let limits = StreamLimits::new(4, 2, 2);
        let [a, b, c]: [IpAddr; 3] =
            ["127.0.0.1", "127.0.0.2", "::1"].map(|ip| ip.parse().unwrap());
        let first = limits.admit(Some("ann"), Some(a)).unwrap();
        let _second = limits.admit(Some("ann"), Some(b)).unwrap();
        let refused = limits.admit(Some("ann"), Some(c)).unwrap_err();
        assert!(refused.to_string().contains("per user"), "{refused}");
        let _third = limits.admit(None, Some(a)).unwrap();
        let refused = limits.admit(Some("bob"), Some(a)).unwrap_err();
        assert!(refused.to_string().contains("per address"), "{refused}");
        let _fourth = limits.admit(Some("bob"), Some(b)).unwrap();
        let refused = limits.admit(Some("carl"), Some(c)).unwrap_err();
        assert!(refused.to_string().contains("server"), "{refused}");
        drop(first);
        assert!(limits.admit(Some("carl"), Some(c)).is_ok());
        assert!(
            limits.admit(Some("ann"), Some(c)).is_ok(),
            "ann's first stream was freed"
        );
        assert_eq!(
            limits.counts().total,
            3,
            "the permits above were dropped at once"
        );
        let counts = limits.counts();
        assert_eq!(
            (counts.authenticated, counts.unique_users),
            (2, 2),
            "{counts:?}"
        );
        let unlimited = StreamLimits::new(0, 0, 0);
        let permits: Vec<_> = (0..100)
            .map(|_| unlimited.admit(Some("u"), Some(a)).unwrap())
            .collect();
        assert_eq!(unlimited.counts().total, permits.len());
    }
}
