//! Which destinations the outbound guard refuses, decided on addresses alone: the block list
//! (loopback, private, CGNAT, link-local, metadata, multicast, reserved, documentation...), the
//! unwrapping of IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4), the
//! operator's allowlist, and the URL preflight that applies all of it to IP literals before
//! anything connects (hyper connects to a literal without asking any resolver).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

use super::OutboundError;

/// Parses the operator's allowlist (`PILOT_OUTBOUND_ALLOW`): comma-separated CIDRs such as
/// `10.1.0.0/16, fd12::/64`; a bare address means that one address. Blank entries are
/// ignored, so an empty string is an empty list.
pub fn parse_allowlist(text: &str) -> Result<Vec<IpNet>, OutboundError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    OutboundError::InvalidConfig(format!(
                        "outbound allowlist entry '{entry}' is not a CIDR or an IP address"
                    ))
                })
        })
        .collect()
}

/// Checks a URL before any connection: http or https only, no userinfo, a host, and an IP
/// literal host classified against the block list and `allow`. A domain name passes here; the
/// resolver checks its addresses. Redirect targets go through the same check.
pub fn check_url(url: &Url, allow: &[IpNet]) -> Result<(), OutboundError> {
    check_url_shape(url)?;
    match url.host() {
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow),
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow),
        Some(Host::Domain(name)) if is_localhost(name) => {
            // `localhost` and its subdomains always name this machine (RFC 6761): judged as
            // its loopback addresses here, so such a URL is refused when it is saved, not only
            // when a request is sent.
            for ip in [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ] {
                check_ip(ip, allow).map_err(|_| {
                    OutboundError::Blocked(format!("{name} is {ip}, a loopback address"))
                })?;
            }
            Ok(())
        }
        Some(Host::Domain(_)) => Ok(()),
        None => Err(OutboundError::InvalidUrl("the URL has no host".into())),
    }
}

/// Whether `name` is `localhost` or one of its subdomains (a trailing dot allowed).
fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Checks one address: refused when it, or the IPv4 address it embeds, is in a blocked range
/// that no `allow` range opens.
///
/// The allowlist is matched against the address the client really connects to. An IPv4-mapped
/// address (`::ffff:a.b.c.d`) is a dual-stack socket's spelling of its IPv4 address, so an
/// allowed IPv4 opens it too; a NAT64 or 6to4 address is a different host reached over IPv6,
/// so an allowed IPv4 embedded in it opens nothing: only an IPv6 range naming it does.
pub fn check_ip(ip: IpAddr, allow: &[IpNet]) -> Result<(), OutboundError> {
    let allowed = |addr: IpAddr| allow.iter().any(|net| net.contains(&addr));
    if allowed(ip) {
        return Ok(());
    }
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = v6.to_ipv4_mapped()
        && allowed(IpAddr::V4(v4))
    {
        return Ok(());
    }
    let (own, embedded) = views(ip);
    if own && let Some(reason) = blocked_reason(ip) {
        return Err(OutboundError::Blocked(format!("{ip} is {reason}")));
    }
    if let Some(inner) = embedded
        && let Some(reason) = blocked_reason(IpAddr::V4(inner))
    {
        return Err(OutboundError::Blocked(format!(
            "{ip} embeds {inner}, {reason}"
        )));
    }
    Ok(())
}

/// The scheme, userinfo and host checks every URL gets, trusted ones included.
pub(crate) fn check_url_shape(url: &Url) -> Result<(), OutboundError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OutboundError::InvalidUrl(format!(
            "scheme '{}' is not allowed (http or https only)",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutboundError::InvalidUrl(
            "credentials in the URL (user:password@) are not allowed".into(),
        ));
    }
    if url.host().is_none() {
        return Err(OutboundError::InvalidUrl("the URL has no host".into()));
    }
    Ok(())
}

/// Why `ip` is blocked, judged on its own bits (no unwrapping), or `None` when it is a public
/// unicast address.
pub(crate) fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

/// Which forms of `ip` must pass the block list: the address itself (`own`) and the IPv4
/// address it embeds. An IPv4-mapped or NAT64 address is only a spelling of its IPv4 address, so
/// only that is judged; a 6to4 address is judged both ways.
fn views(ip: IpAddr) -> (bool, Option<Ipv4Addr>) {
    let IpAddr::V6(v6) = ip else {
        return (true, None);
    };
    let bits = u128::from(v6);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return (false, Some(v4));
    }
    if in_v6(bits, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return (false, Some(Ipv4Addr::from(bits as u32)));
    }
    if in_v6(bits, 0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        return (true, Some(Ipv4Addr::from((bits >> 80) as u32)));
    }
    (true, None)
}

/// IPv4 ranges refused by default, most specific first so the reason is the precise one.
const BLOCKED_V4: &[([u8; 4], u8, &str)] = &[
    ([169, 254, 169, 254], 32, "a cloud metadata address"),
    ([168, 63, 129, 16], 32, "a cloud metadata address"),
    ([192, 0, 0, 192], 32, "a cloud metadata address"),
    ([255, 255, 255, 255], 32, "the broadcast address"),
    ([0, 0, 0, 0], 8, "an unspecified (\"this network\") address"),
    ([10, 0, 0, 0], 8, "a private address"),
    ([100, 64, 0, 0], 10, "a shared (CGNAT) address"),
    ([127, 0, 0, 0], 8, "a loopback address"),
    ([169, 254, 0, 0], 16, "a link-local address"),
    ([172, 16, 0, 0], 12, "a private address"),
    ([192, 0, 0, 0], 24, "an IETF protocol assignment"),
    ([192, 0, 2, 0], 24, "a documentation address"),
    ([192, 88, 99, 0], 24, "a 6to4 relay anycast address"),
    ([192, 168, 0, 0], 16, "a private address"),
    ([198, 18, 0, 0], 15, "a benchmarking address"),
    ([198, 51, 100, 0], 24, "a documentation address"),
    ([203, 0, 113, 0], 24, "a documentation address"),
    ([224, 0, 0, 0], 4, "a multicast address"),
    ([240, 0, 0, 0], 4, "a reserved address"),
];

/// IPv6 ranges refused by default, most specific first. Everything outside 2000::/3 (global
/// unicast) is refused as well, after IPv4-mapped and NAT64 forms were unwrapped.
const BLOCKED_V6: &[(u128, u8, &str)] = &[
    (0, 128, "the unspecified address"),
    (1, 128, "a loopback address"),
    (
        0xfd00_0ec2_0000_0000_0000_0000_0000_0254,
        128,
        "a cloud metadata address",
    ),
    (0, 96, "an IPv4-compatible (deprecated) address"),
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        "a local-use NAT64 address",
    ),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        "a discard-only address",
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        "a documentation address",
    ),
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        23,
        "an IETF protocol assignment (Teredo, ORCHID...)",
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        "a documentation address",
    ),
    (
        0x5f00_0000_0000_0000_0000_0000_0000_0000,
        16,
        "an SRv6 segment identifier",
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        "a unique local (private) address",
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        "a link-local address",
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        "a site-local address",
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        "a multicast address",
    ),
];

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    BLOCKED_V4
        .iter()
        .find(|(net, prefix, _)| in_v4(bits, u32::from_be_bytes(*net), *prefix))
        .map(|(_, _, reason)| *reason)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    if let Some((_, _, reason)) = BLOCKED_V6
        .iter()
        .find(|(net, prefix, _)| in_v6(bits, *net, *prefix))
    {
        return Some(reason);
    }
    if !in_v6(bits, 0x2000_0000_0000_0000_0000_0000_0000_0000, 3) {
        return Some("a reserved address (not global unicast)");
    }
    None
}

fn in_v4(bits: u32, net: u32, prefix: u8) -> bool {
    let shift = 32 - u32::from(prefix);
    bits.checked_shr(shift).unwrap_or(0) == net.checked_shr(shift).unwrap_or(0)
}

fn in_v6(bits: u128, net: u128, prefix: u8) -> bool {
    let shift = 128 - u32::from(prefix);
    bits.checked_shr(shift).unwrap_or(0) == net.checked_shr(shift).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(text: &str) -> Vec<IpNet> {
        parse_allowlist(text).unwrap()
    }

    /// `expect` is `None` for allowed, or a fragment of the refusal's reason.
    fn check(addr: &str, allowlist: &str, expect: Option<&str>) {
        let ip: IpAddr = addr.parse().unwrap();
        let got = check_ip(ip, &allow(allowlist));
        match (expect, got) {
            (None, Ok(())) => {}
            (Some(fragment), Err(OutboundError::Blocked(message))) => {
                assert!(
                    message.contains(fragment),
                    "{addr}: '{message}' lacks '{fragment}'"
                )
            }
            (expect, got) => {
                panic!("{addr} with allow '{allowlist}': expected {expect:?}, got {got:?}")
            }
        }
    }

    #[test]
    fn ipv4_block_list() {
        let cases = [
            ("169.254.169.254", Some("metadata")),
            ("168.63.129.16", Some("metadata")),
            ("192.0.0.192", Some("metadata")),
            ("169.254.1.1", Some("link-local")),
            ("10.0.0.1", Some("private")),
            ("10.255.255.255", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.254", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("CGNAT")),
            ("100.127.255.254", Some("CGNAT")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("255.255.255.255", Some("broadcast")),
            ("240.0.0.1", Some("reserved")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("192.0.2.1", Some("documentation")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("192.0.0.8", Some("IETF")),
            ("192.88.99.1", Some("6to4 relay")),
            // Neighbours of blocked ranges are public.
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("11.0.0.1", None),
            ("93.184.216.34", None),
            ("1.1.1.1", None),
            ("223.255.255.255", None),
        ];
        for (addr, expect) in cases {
            check(addr, "", expect);
        }
    }

    #[test]
    fn ipv6_block_list_and_unwrapping() {
        let cases = [
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fd00:ec2::254", Some("metadata")),
            ("fd12:3456::1", Some("unique local")),
            ("fc00::1", Some("unique local")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("100::1", Some("discard")),
            ("2001::1", Some("IETF")),
            ("5f00::1", Some("SRv6")),
            ("64:ff9b:1::a00:1", Some("local-use NAT64")),
            ("::a00:1", Some("IPv4-compatible")),
            ("4000::1", Some("not global unicast")),
            // IPv4-mapped: judged as the IPv4 address it spells.
            (
                "::ffff:169.254.169.254",
                Some("embeds 169.254.169.254, a cloud metadata"),
            ),
            ("::ffff:10.0.0.1", Some("embeds 10.0.0.1, a private")),
            ("::ffff:127.0.0.2", Some("embeds 127.0.0.2, a loopback")),
            ("::ffff:93.184.216.34", None),
            // NAT64 well-known prefix.
            (
                "64:ff9b::a9fe:a9fe",
                Some("embeds 169.254.169.254, a cloud metadata"),
            ),
            ("64:ff9b::10.0.0.1", Some("private")),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("64:ff9b::5db8:d822", None),
            // 6to4: the embedded IPv4 address decides.
            ("2002:a9fe:a9fe::", Some("embeds 169.254.169.254")),
            ("2002:a00:1::1", Some("embeds 10.0.0.1")),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:5db8:d822::1", None),
            // Public unicast.
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::1", None),
        ];
        for (addr, expect) in cases {
            check(addr, "", expect);
        }
    }

    #[test]
    fn the_allowlist_opens_only_what_it_names() {
        let cases = [
            ("127.0.0.1", "127.0.0.1/32", None),
            ("::ffff:127.0.0.1", "127.0.0.1/32", None),
            ("127.0.0.2", "127.0.0.1/32", Some("loopback")),
            ("::1", "127.0.0.1/32", Some("loopback")),
            ("::ffff:127.0.0.2", "127.0.0.1/32", Some("127.0.0.2")),
            ("64:ff9b::7f00:2", "127.0.0.1/32", Some("127.0.0.2")),
            // NAT64 and 6to4 forms are other hosts, reached over IPv6: an allowed IPv4 embedded
            // in them opens nothing, an IPv6 range naming them does.
            ("64:ff9b::7f00:1", "127.0.0.1/32", Some("embeds 127.0.0.1")),
            ("2002:7f00:1::", "127.0.0.1/32", Some("embeds 127.0.0.1")),
            ("2002:7f00:1::", "127.0.0.0/8", Some("embeds 127.0.0.1")),
            ("64:ff9b::7f00:1", "64:ff9b::/96", None),
            ("2002:7f00:1::", "2002::/16", None),
            ("169.254.169.254", "127.0.0.1/32", Some("metadata")),
            ("10.1.2.3", "10.1.0.0/16", None),
            ("10.2.0.1", "10.1.0.0/16", Some("private")),
            ("fd00:ec2::254", "10.0.0.0/8", Some("metadata")),
            ("fd12::5", "fd12::/16, 10.0.0.0/8", None),
            ("192.168.0.10", " 192.168.0.10 ,", None),
        ];
        for (addr, allowlist, expect) in cases {
            check(addr, allowlist, expect);
        }
    }

    #[test]
    fn allowlist_parsing() {
        assert_eq!(allow(""), Vec::<IpNet>::new());
        assert_eq!(allow(" , "), Vec::<IpNet>::new());
        assert_eq!(
            allow("127.0.0.1/32,10.1.2.3/16, ::1"),
            vec![
                "127.0.0.1/32".parse::<IpNet>().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        for bad in [
            "10.0.0.0/33",
            "example.com",
            "10.0.0.0/8;",
            "1.2.3",
            "::1/129",
        ] {
            let err = parse_allowlist(bad).unwrap_err();
            assert!(
                matches!(err, OutboundError::InvalidConfig(ref m) if m.contains(bad)),
                "{bad}: {err}"
            );
        }
    }

    /// Every spelling the URL parser accepts for a host ends up classified: the `url` crate
    /// (WHATWG rules) normalises decimal, hex, octal and short IPv4 forms to an address.
    #[test]
    fn url_preflight() {
        let cases = [
            ("http://169.254.169.254/latest/meta-data/", Some("metadata")),
            ("http://2852039166/", Some("metadata")),
            ("http://0xa9fea9fe/", Some("metadata")),
            ("http://0xA9.0xFE.0xA9.0xFE/", Some("metadata")),
            ("http://0251.0376.0251.0376/", Some("metadata")),
            ("http://169.254.43518/", Some("metadata")),
            ("http://10.0.0.1:8080/", Some("private")),
            ("http://167772161/", Some("private")),
            ("http://012.0.0.1/", Some("private")),
            ("http://10.1/", Some("private")),
            ("http://2130706434/", Some("127.0.0.2")),
            ("http://0x7f000002/", Some("127.0.0.2")),
            ("http://0177.0.0.2/", Some("127.0.0.2")),
            ("http://127.2/", Some("127.0.0.2")),
            ("http://127.0.0.2./", Some("127.0.0.2")),
            ("http://0/", Some("unspecified")),
            ("http://[::1]/", Some("loopback")),
            ("http://[::ffff:169.254.169.254]/", Some("metadata")),
            ("http://[::ffff:a9fe:a9fe]/", Some("metadata")),
            ("http://[64:ff9b::a9fe:a9fe]/", Some("metadata")),
            ("http://[fd00:ec2::254]/", Some("metadata")),
            ("http://[2002:a9fe:a9fe::]/", Some("metadata")),
            ("https://[fe80::1]/", Some("link-local")),
            ("https://93.184.216.34/", None),
            ("https://example.com/", None),
            (
                "http://localhost:9001/",
                Some("localhost is 127.0.0.1, a loopback address"),
            ),
            ("http://LocalHost./", Some("loopback")),
            ("http://api.localhost/", Some("loopback")),
            ("https://localhost.example.com/", None),
        ];
        for (text, expect) in cases {
            let url = Url::parse(text).unwrap();
            match (expect, check_url(&url, &[])) {
                (None, Ok(())) => {}
                (Some(fragment), Err(OutboundError::Blocked(m))) => {
                    assert!(m.contains(fragment), "{text}: '{m}' lacks '{fragment}'")
                }
                (expect, got) => panic!("{text}: expected {expect:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn url_shape() {
        let cases = [
            ("ftp://example.com/", "scheme 'ftp'"),
            ("file:///etc/passwd", "scheme 'file'"),
            ("gopher://example.com/", "scheme 'gopher'"),
            ("http://user:pw@example.com/", "credentials in the URL"),
            ("http://user@example.com/", "credentials in the URL"),
            ("https://:pw@example.com/", "credentials in the URL"),
        ];
        for (text, fragment) in cases {
            let url = Url::parse(text).unwrap();
            match check_url(&url, &[]) {
                Err(OutboundError::InvalidUrl(m)) => assert!(m.contains(fragment), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
