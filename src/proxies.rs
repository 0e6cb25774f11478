//! Who the client is behind proxies: `X-Forwarded-For`, believed only from
//! the proxies `--trusted-proxies` names.
//!
//! Each proxy appends the address it received the request from, so the
//! header is read from the right: addresses of trusted proxies are skipped,
//! and the first one that is not trusted is the client. A peer that is not
//! a trusted proxy is the client itself, whatever the header says (anyone
//! can send one).

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8,127.0.0.1,::1` (networks or single addresses).
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut networks = Vec::new();
        for entry in list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let network = match entry.parse::<IpNet>() {
                Ok(network) => network,
                Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    format!("`{entry}` is not an address or a network such as 10.0.0.0/8")
                })?,
            };
            networks.push(network);
        }
        Ok(TrustedProxies(networks))
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client's address, for a request from `peer` with `headers`.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Several headers count as one list, in order.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.into_iter().rev() {
            // A hop that does not parse ends what can be believed.
            let Ok(address) = hop.parse::<IpAddr>() else {
                break;
            };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        canonical(client)
    }
}

/// IPv4 addresses that arrived as IPv6 (`::ffff:a.b.c.d`) as IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_header_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap();
        let forwarded = headers(&["203.0.113.7, 10.1.2.3"]);
        // Through a trusted proxy (and a trusted hop): the client.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &forwarded),
            ip("203.0.113.7")
        );
        // From anyone else the header is ignored.
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &forwarded),
            ip("198.51.100.1")
        );
        // A client cannot hide behind a forged first entry.
        let forged = headers(&["1.2.3.4, 203.0.113.7"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &forged), ip("203.0.113.7"));
        // Several headers are one list; a malformed hop stops the walk.
        let split = headers(&["203.0.113.9", "10.0.0.5"]);
        assert_eq!(proxies.client(ip("10.9.9.9"), &split), ip("203.0.113.9"));
        let broken = headers(&["203.0.113.9, garbage, 10.0.0.5"]);
        assert_eq!(proxies.client(ip("10.9.9.9"), &broken), ip("10.0.0.5"));
        // No header: the proxy itself.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        // IPv4 seen through IPv6.
        assert_eq!(
            proxies.client(ip("::ffff:127.0.0.1"), &headers(&["2001:db8::1"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
    }
}
