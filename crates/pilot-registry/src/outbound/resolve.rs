//! Name resolution for the outbound client: an injectable [`Lookup`] (the system resolver in
//! production, a fixed table in tests, so no test ever asks a real DNS server) and the reqwest
//! resolver built on it, which refuses a name when any of its addresses is blocked and hands
//! reqwest exactly the addresses it checked. hyper then connects only to those, so there is no
//! second resolution an attacker's DNS server could answer differently (no rebinding window).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::OutboundError;
use super::address::check_ip;

/// Turns a host name into addresses.
#[async_trait]
pub trait Lookup: Send + Sync + std::fmt::Debug {
    /// Every address `host` resolves to.
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`getaddrinfo` on a blocking thread, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

#[async_trait]
impl Lookup for SystemLookup {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        Ok(addrs.map(|addr| addr.ip()).collect())
    }
}

/// A fixed table of answers; any other name fails as unknown. For tests and for programs that
/// must not use DNS at all.
#[derive(Debug, Clone, Default)]
pub struct StaticLookup {
    answers: HashMap<String, Vec<IpAddr>>,
}

impl StaticLookup {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the answer for `host` (matched case-insensitively).
    pub fn with(mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.answers
            .insert(host.to_ascii_lowercase(), addrs.into_iter().collect());
        self
    }
}

#[async_trait]
impl Lookup for StaticLookup {
    async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.answers
            .get(&host.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
    }
}

/// The resolver installed into reqwest. `allow` is `None` for the trusted client (operator
/// configuration), which resolves without checking.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) lookup: Arc<dyn Lookup>,
    pub(crate) allow: Option<Arc<[IpNet]>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolver.resolve_checked(&host).await?;
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

impl GuardedResolver {
    /// Resolves `host` once and checks every address; returns them, deduplicated, in the
    /// resolver's order.
    pub(crate) async fn resolve_checked(&self, host: &str) -> Result<Vec<IpAddr>, OutboundError> {
        let mut addrs = self
            .lookup
            .lookup(host)
            .await
            .map_err(|e| OutboundError::Connect(format!("resolving {host}: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|ip| seen.insert(*ip));
        if addrs.is_empty() {
            return Err(OutboundError::Connect(format!(
                "resolving {host}: no addresses"
            )));
        }
        if let Some(allow) = &self.allow {
            for ip in &addrs {
                check_ip(*ip, allow).map_err(|e| match e {
                    OutboundError::Blocked(why) => {
                        OutboundError::Blocked(format!("{host} resolves to {why}"))
                    }
                    other => other,
                })?;
            }
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// Counts lookups, to prove each resolution asks once.
    #[derive(Debug)]
    struct Counting(StaticLookup, AtomicUsize);

    #[async_trait]
    impl Lookup for Counting {
        async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.lookup(host).await
        }
    }

    fn table() -> StaticLookup {
        StaticLookup::new()
            .with("public.test", ips(&["93.184.216.34", "2606:4700::1"]))
            .with("mixed.test", ips(&["93.184.216.34", "10.0.0.1"]))
            .with("mixed6.test", ips(&["2606:4700::1", "fd00:ec2::254"]))
            .with("metadata.test", ips(&["169.254.169.254"]))
            .with("mapped.test", ips(&["::ffff:169.254.169.254"]))
            .with("nat64.test", ips(&["64:ff9b::a9fe:a9fe"]))
            .with("sixtofour.test", ips(&["2002:a9fe:a9fe::"]))
            .with("loop.test", ips(&["127.0.0.1", "::1"]))
            .with("local.test", ips(&["127.0.0.1", "127.0.0.1"]))
            .with("empty.test", [])
    }

    /// `expect`: `Ok(addresses)` or `Err(fragment of the error)`.
    async fn check(host: &str, allow: &str, expect: Result<&[&str], &str>) {
        let resolver = GuardedResolver {
            lookup: Arc::new(table()),
            allow: Some(super::super::parse_allowlist(allow).unwrap().into()),
        };
        let got = resolver.resolve_checked(host).await;
        match (expect, got) {
            (Ok(want), Ok(addrs)) => assert_eq!(addrs, ips(want), "{host}"),
            (Err(fragment), Err(e)) => {
                assert!(
                    e.to_string().contains(fragment),
                    "{host}: '{e}' lacks '{fragment}'"
                )
            }
            (expect, got) => panic!("{host}: expected {expect:?}, got {got:?}"),
        }
    }

    #[tokio::test]
    async fn names_are_refused_when_any_address_is_blocked() {
        check("public.test", "", Ok(&["93.184.216.34", "2606:4700::1"])).await;
        check("PUBLIC.test", "", Ok(&["93.184.216.34", "2606:4700::1"])).await;
        check(
            "mixed.test",
            "",
            Err("mixed.test resolves to 10.0.0.1 is a private"),
        )
        .await;
        check("mixed6.test", "", Err("metadata")).await;
        check("metadata.test", "", Err("metadata")).await;
        check("mapped.test", "", Err("embeds 169.254.169.254")).await;
        check("nat64.test", "", Err("embeds 169.254.169.254")).await;
        check("sixtofour.test", "", Err("embeds 169.254.169.254")).await;
        check("loop.test", "127.0.0.1/32", Err("::1 is a loopback")).await;
        check(
            "mixed.test",
            "10.0.0.0/8",
            Ok(&["93.184.216.34", "10.0.0.1"]),
        )
        .await;
        check("local.test", "127.0.0.1/32", Ok(&["127.0.0.1"])).await;
        check("empty.test", "", Err("no addresses")).await;
        check("unknown.test", "", Err("resolving unknown.test")).await;
    }

    #[tokio::test]
    async fn the_reqwest_resolver_returns_exactly_the_checked_addresses_after_one_lookup() {
        let counting = Arc::new(Counting(table(), AtomicUsize::new(0)));
        let resolver = GuardedResolver {
            lookup: counting.clone(),
            allow: Some(Vec::new().into()),
        };
        let addrs: Vec<SocketAddr> = resolver
            .resolve("public.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(
            addrs,
            vec![
                "93.184.216.34:0".parse::<SocketAddr>().unwrap(),
                "[2606:4700::1]:0".parse().unwrap()
            ]
        );
        assert_eq!(counting.1.load(Ordering::SeqCst), 1);

        let refused = resolver
            .resolve("mixed.test".parse().unwrap())
            .await
            .err()
            .unwrap();
        let refused = refused.downcast_ref::<OutboundError>().unwrap();
        assert!(matches!(refused, OutboundError::Blocked(_)), "{refused:?}");
    }

    #[tokio::test]
    async fn the_trusted_resolver_does_not_check() {
        let resolver = GuardedResolver {
            lookup: Arc::new(table()),
            allow: None,
        };
        assert_eq!(
            resolver.resolve_checked("metadata.test").await.unwrap(),
            ips(&["169.254.169.254"])
        );
    }
}
