//! Which function holds which host: the one rule the activator routes by and the controller
//! reports on (condition HostsAccepted), so that both sides always decide alike.
//!
//! A tenant writes `spec.triggers.http.hosts`, so every claim is untrusted. Host routes win over
//! path routes; a function holding a name the activator itself is reached by would receive the
//! path-routed requests of every other function and every schedule tick. So the activator's
//! own names cannot be claimed, nor names under its domain (fargo gives those out as
//! `{function}.{namespace}.<domain>`), nor IP addresses and `localhost`. Of two functions
//! claiming the same host and path the earlier keeps it: a newcomer cannot take over traffic
//! another function already serves.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;

use super::ServerlessFunction;

/// The names the activator is reached by, which no function may claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivatorNames {
    service: String,
    namespace: String,
    /// Without leading or trailing dot.
    domain: String,
}

impl ActivatorNames {
    /// The activator behind Service `service` in `namespace`, naming functions
    /// `{function}.{namespace}.<domain>`.
    pub fn new(service: &str, namespace: &str, domain: &str) -> Self {
        Self {
            service: service.to_ascii_lowercase(),
            namespace: namespace.to_ascii_lowercase(),
            domain: domain.trim_matches('.').to_ascii_lowercase(),
        }
    }

    /// The domain of the function host names, lower case, without leading or trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Why `host` (as [`host_name`] gives it) cannot be claimed, if it cannot.
    pub fn reserved(&self, host: &str) -> Option<Reserved> {
        if host.parse::<IpAddr>().is_ok() || looks_numeric(host) {
            return Some(Reserved::IpAddress);
        }
        if !is_dns_name(host) {
            return Some(Reserved::NotAHostName);
        }
        if host == "localhost" || host.ends_with(".localhost") {
            return Some(Reserved::Localhost);
        }
        if self.is_service_name(host) {
            return Some(Reserved::ActivatorService {
                service: self.service.clone(),
                namespace: self.namespace.clone(),
            });
        }
        if !self.domain.is_empty()
            && (host == self.domain
                || host
                    .strip_suffix(self.domain.as_str())
                    .is_some_and(|rest| rest.ends_with('.')))
        {
            return Some(Reserved::FunctionDomain {
                domain: self.domain.clone(),
            });
        }
        None
    }

    /// `<service>`, `<service>.<namespace>`, `<service>.<namespace>.svc` and anything under
    /// that (`.cluster.local`, or whatever the cluster's domain is).
    fn is_service_name(&self, host: &str) -> bool {
        let Some(rest) = host.strip_prefix(self.service.as_str()) else {
            return false;
        };
        if rest.is_empty() {
            return true;
        }
        let Some(rest) = rest
            .strip_prefix('.')
            .and_then(|rest| rest.strip_prefix(self.namespace.as_str()))
        else {
            return false;
        };
        rest.is_empty() || rest == ".svc" || rest.starts_with(".svc.")
    }
}

/// Lower-case letters, digits and `-` in dot-separated labels of 1 to 63 characters, at most
/// 253 in all: what the CRD admits.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Names that resolvers read as IPv4 addresses though `IpAddr` does not (`127.1`,
/// `2130706433`, `0x7f.1`): no top-level domain is all digits.
fn looks_numeric(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a host cannot be claimed at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserved {
    /// A name of the activator's own Service.
    ActivatorService { service: String, namespace: String },
    /// A name under the activator's domain, where fargo names functions.
    FunctionDomain { domain: String },
    /// An IP address: it names a machine, the activator's own among others.
    IpAddress,
    /// `localhost` or a name under it.
    Localhost,
    /// Not a lower-case DNS name.
    NotAHostName,
}

/// Why one host a function claims is not routed to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No function may claim the host.
    Reserved { host: String, why: Reserved },
    /// Another function claimed the same host and path first.
    Claimed {
        host: String,
        path: String,
        holder_namespace: String,
        holder_name: String,
    },
}

impl Refusal {
    pub fn is_reserved(&self) -> bool {
        matches!(self, Refusal::Reserved { .. })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Reserved { host, why } => match why {
                Reserved::ActivatorService { service, namespace } => write!(
                    f,
                    "host {host:?} is a name of the fargo activator itself (Service {service} in \
                     {namespace}), which routes every function's requests"
                ),
                Reserved::FunctionDomain { domain } => write!(
                    f,
                    "host {host:?} lies under {domain}, where fargo names each function \
                     {{function}}.{{namespace}}.{domain}"
                ),
                Reserved::IpAddress => write!(f, "host {host:?} is an IP address, not a name"),
                Reserved::Localhost => write!(f, "host {host:?} names the local machine"),
                Reserved::NotAHostName => write!(f, "host {host:?} is not a lower-case DNS name"),
            },
            Refusal::Claimed {
                host,
                path,
                holder_namespace,
                holder_name,
            } => write!(
                f,
                "host {host:?} with path {path:?} is held by function \
                 {holder_namespace}/{holder_name}, which claimed it first"
            ),
        }
    }
}

/// Lower case, without port or trailing dot (and without the brackets of an IPv6 address);
/// borrows unless the host has upper-case letters. Both claims and request `Host` headers go
/// through it, so that they compare alike.
pub fn host_name(host: &str) -> Cow<'_, str> {
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map_or(bracketed, |(ip, _)| ip),
        // Searched byte by byte: a host is short, and `rsplit_once` costs more to set up.
        None => match host.bytes().rposition(|b| b == b':') {
            Some(colon)
                if !host[..colon].contains(':')
                    && host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                &host[..colon]
            }
            _ => host,
        },
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The path prefix a claim stands for: `/api/` and `/api` are the same claim, `""` is `/`.
pub fn path_prefix(path: &str) -> &str {
    path.trim_end_matches('/')
}

/// Whether `path` lies under `prefix` (as [`path_prefix`] gives it), on a segment boundary.
pub fn prefix_matches(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.is_empty() || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// How claims on the same host and path rank: the function created first, then by namespace
/// and name (creation times have one-second resolution, and must not leave the choice to the
/// order in which functions are seen).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimRank {
    /// `Timestamp::MAX` when unknown: a function without a creation time claims last.
    created: Timestamp,
    namespace: String,
    name: String,
}

impl ClaimRank {
    pub fn new(created: Option<Timestamp>, namespace: &str, name: &str) -> Self {
        Self {
            created: created.unwrap_or(Timestamp::MAX),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One function's claim: its `spec.triggers.http` and when it was created.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub created: Option<Timestamp>,
    /// A function that takes no HTTP requests claims nothing.
    pub enabled: bool,
    pub hosts: &'a [String],
    pub path: &'a str,
}

impl<'a> Claim<'a> {
    /// The claim of a function; `None` without namespace or name.
    pub fn of(function: &'a ServerlessFunction) -> Option<Self> {
        let http = &function.spec.triggers.http;
        Some(Self {
            namespace: function.metadata.namespace.as_deref()?,
            name: function.metadata.name.as_deref()?,
            created: function.metadata.creation_timestamp.as_ref().map(|t| t.0),
            enabled: http.enabled,
            hosts: &http.hosts,
            path: &http.path,
        })
    }

    /// The distinct hosts it claims, as [`host_name`] gives them; none when disabled.
    fn host_names(&self) -> Vec<String> {
        if !self.enabled {
            return vec![];
        }
        let mut hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|host| host_name(host).into_owned())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// Every function's host claims, and who holds each host and path.
#[derive(Debug)]
pub struct HostClaims {
    names: ActivatorNames,
    /// Host → the claims on it that may be routed: longest path prefix first, then by rank, so
    /// that the first claim whose prefix matches a request's path holds it.
    hosts: HashMap<String, Vec<HostClaim>>,
    /// `(namespace, name)` → what the function claims, reserved hosts included.
    functions: HashMap<(String, String), FunctionClaims>,
}

#[derive(Debug, Clone)]
struct HostClaim {
    prefix: String,
    rank: ClaimRank,
}

#[derive(Debug)]
struct FunctionClaims {
    hosts: Vec<String>,
    path: String,
}

impl HostClaims {
    pub fn new(names: ActivatorNames) -> Self {
        Self {
            names,
            hosts: HashMap::new(),
            functions: HashMap::new(),
        }
    }

    pub fn names(&self) -> &ActivatorNames {
        &self.names
    }

    /// Records a function's claims in place of its earlier ones; returns the hosts it claims
    /// that no function may claim, which are never routed.
    pub fn claim(&mut self, claim: &Claim<'_>) -> Vec<Refusal> {
        self.withdraw(claim.namespace, claim.name);
        let hosts = claim.host_names();
        if hosts.is_empty() {
            return vec![];
        }
        let prefix = path_prefix(claim.path).to_string();
        let rank = ClaimRank::new(claim.created, claim.namespace, claim.name);
        let mut reserved = vec![];
        for host in &hosts {
            if let Some(why) = self.names.reserved(host) {
                reserved.push(Refusal::Reserved {
                    host: host.clone(),
                    why,
                });
                continue;
            }
            let claims = self.hosts.entry(host.clone()).or_default();
            claims.push(HostClaim {
                prefix: prefix.clone(),
                rank: rank.clone(),
            });
            claims.sort_by(|a, b| {
                b.prefix
                    .len()
                    .cmp(&a.prefix.len())
                    .then_with(|| a.rank.cmp(&b.rank))
            });
        }
        self.functions.insert(
            (claim.namespace.to_string(), claim.name.to_string()),
            FunctionClaims {
                hosts,
                path: claim.path.to_string(),
            },
        );
        reserved
    }

    /// Forgets a function's claims: what it held passes to the next claim in rank.
    pub fn withdraw(&mut self, namespace: &str, name: &str) {
        let Some(claimed) = self
            .functions
            .remove(&(namespace.to_string(), name.to_string()))
        else {
            return;
        };
        for host in &claimed.hosts {
            if let Some(claims) = self.hosts.get_mut(host) {
                claims.retain(|c| !(c.rank.namespace == namespace && c.rank.name == name));
                if claims.is_empty() {
                    self.hosts.remove(host);
                }
            }
        }
    }

    /// `(namespace, name)` of the function a request for `host` (as [`host_name`] gives it)
    /// and `path` goes to: of the claims whose prefix matches, the longest, and of those the
    /// first in rank.
    pub fn route(&self, host: &str, path: &str) -> Option<(&str, &str)> {
        self.hosts
            .get(host)?
            .iter()
            .find(|claim| prefix_matches(path, &claim.prefix))
            .map(|claim| (claim.rank.namespace(), claim.rank.name()))
    }

    /// Who holds `host` with exactly this path prefix.
    fn holder(&self, host: &str, prefix: &str) -> Option<&ClaimRank> {
        self.hosts
            .get(host)?
            .iter()
            .find(|claim| claim.prefix == prefix)
            .map(|claim| &claim.rank)
    }

    /// Why each host the function claims is not routed to it; empty when all are.
    pub fn refusals(&self, namespace: &str, name: &str) -> Vec<Refusal> {
        let Some(claimed) = self
            .functions
            .get(&(namespace.to_string(), name.to_string()))
        else {
            return vec![];
        };
        let prefix = path_prefix(&claimed.path);
        let mut refusals = vec![];
        for host in &claimed.hosts {
            if let Some(why) = self.names.reserved(host) {
                refusals.push(Refusal::Reserved {
                    host: host.clone(),
                    why,
                });
            } else if let Some(holder) = self.holder(host, prefix)
                && (holder.namespace(), holder.name()) != (namespace, name)
            {
                refusals.push(Refusal::Claimed {
                    host: host.clone(),
                    path: claimed.path.clone(),
                    holder_namespace: holder.namespace().to_string(),
                    holder_name: holder.name().to_string(),
                });
            }
        }
        refusals
    }
}

/// Why each host `function` claims is not routed to it, among `functions` (every function
/// there is; `function` itself may be among them): what [`HostClaims`] decides in the
/// activator, for one function.
pub fn refusals_among<'a>(
    function: &ServerlessFunction,
    functions: impl IntoIterator<Item = &'a ServerlessFunction>,
    names: &ActivatorNames,
) -> Vec<Refusal> {
    let Some(own) = Claim::of(function) else {
        return vec![];
    };
    let own_hosts = own.host_names();
    if own_hosts.is_empty() {
        return vec![];
    }
    let mut claims = HostClaims::new(names.clone());
    claims.claim(&own);
    for other in functions {
        let Some(claim) = Claim::of(other) else {
            continue;
        };
        let same = claim.namespace == own.namespace && claim.name == own.name;
        // Only those claiming one of its hosts can hold one.
        if !same
            && claim
                .host_names()
                .iter()
                .any(|host| own_hosts.contains(host))
        {
            claims.claim(&claim);
        }
    }
    claims.refusals(own.namespace, own.name)
}

/// The hosts a function claims, as [`host_name`] gives them; none when it takes no HTTP
/// requests.
pub fn claimed_hosts(function: &ServerlessFunction) -> Vec<String> {
    Claim::of(function)
        .map(|claim| claim.host_names())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ActivatorNames {
        ActivatorNames::new("fargo-activator", "fargo-system", "fargo.local")
    }

    fn reserved(host: &str) -> Option<Reserved> {
        names().reserved(&host_name(host))
    }

    fn at(second: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(second).expect("a valid time"))
    }

    fn claim<'a>(
        namespace: &'a str,
        name: &'a str,
        created: Option<Timestamp>,
        hosts: &'a [String],
        path: &'a str,
    ) -> Claim<'a> {
        Claim {
            namespace,
            name,
            created,
            enabled: true,
            hosts,
            path,
        }
    }

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn the_activators_service_names_are_reserved_with_or_without_port() {
        for host in [
            "fargo-activator",
            "fargo-activator.fargo-system",
            "fargo-activator.fargo-system.svc",
            "fargo-activator.fargo-system.svc.cluster.local",
            "Fargo-Activator.Fargo-System.svc.cluster.local.",
            "fargo-activator.fargo-system.svc:80",
            "fargo-activator.fargo-system.svc.cluster.local:8080",
            "fargo-activator.fargo-system.svc.corp.example",
        ] {
            assert!(
                matches!(reserved(host), Some(Reserved::ActivatorService { .. })),
                "{host}"
            );
        }
        for host in [
            "fargo-activator.other",
            "fargo-activator-x.fargo-system.svc",
            "fargo-activator.fargo-system.svcx",
            "fargo-activator.fargo-systemx.svc",
            "shop.example.com",
        ] {
            assert_eq!(reserved(host), None, "{host}");
        }
    }

    #[test]
    fn names_under_the_function_domain_are_reserved() {
        for host in [
            "fargo.local",
            "thumbnail.media.fargo.local",
            "x.thumbnail.media.fargo.local:80",
        ] {
            assert!(
                matches!(reserved(host), Some(Reserved::FunctionDomain { .. })),
                "{host}"
            );
        }
        assert_eq!(reserved("notfargo.local"), None);
        assert_eq!(reserved("fargo.local.example.com"), None);
    }

    #[test]
    fn ip_addresses_and_localhost_are_reserved() {
        for host in [
            "10.96.0.10",
            "10.96.0.10:80",
            "127.1",
            "2130706433",
            "0x7f.1",
            "::1",
            "[::1]:8080",
            "[fd00::1]",
            "www.123",
        ] {
            assert_eq!(reserved(host), Some(Reserved::IpAddress), "{host}");
        }
        for host in ["localhost", "LOCALHOST:80", "app.localhost"] {
            assert_eq!(reserved(host), Some(Reserved::Localhost), "{host}");
        }
    }

    #[test]
    fn what_is_not_a_dns_name_is_reserved() {
        for host in [
            "",
            "*.example.com",
            "a..b",
            "-a.example.com",
            "a_b.example.com",
        ] {
            assert_eq!(reserved(host), Some(Reserved::NotAHostName), "{host:?}");
        }
        assert_eq!(reserved("shop-1.example.com"), None);
    }

    #[test]
    fn a_reserved_claim_is_refused_and_never_routed() {
        let mut claims = HostClaims::new(names());
        let stolen = hosts(&["fargo-activator.fargo-system.svc", "shop.example.com"]);
        let refused = claims.claim(&claim("evil", "thief", at(10), &stolen, "/"));
        assert_eq!(
            refused,
            vec![Refusal::Reserved {
                host: "fargo-activator.fargo-system.svc".into(),
                why: Reserved::ActivatorService {
                    service: "fargo-activator".into(),
                    namespace: "fargo-system".into()
                }
            }]
        );
        assert_eq!(
            claims.route("fargo-activator.fargo-system.svc", "/media/thumbnail/"),
            None
        );
        assert_eq!(
            claims.route("shop.example.com", "/x"),
            Some(("evil", "thief"))
        );
        assert_eq!(claims.refusals("evil", "thief"), refused);
    }

    #[test]
    fn the_earlier_claim_on_a_host_and_path_keeps_it() {
        let shop = hosts(&["shop.example.com"]);
        let mut claims = HostClaims::new(names());
        // Seen in either order, the older function holds the host.
        claims.claim(&claim("b", "late", at(20), &shop, "/"));
        claims.claim(&claim("z", "early", at(10), &shop, "/"));
        assert_eq!(claims.route("shop.example.com", "/"), Some(("z", "early")));
        assert_eq!(claims.refusals("z", "early"), vec![]);
        assert_eq!(
            claims.refusals("b", "late"),
            vec![Refusal::Claimed {
                host: "shop.example.com".into(),
                path: "/".into(),
                holder_namespace: "z".into(),
                holder_name: "early".into()
            }]
        );
        // When the holder goes, the next claim takes over.
        claims.withdraw("z", "early");
        assert_eq!(claims.route("shop.example.com", "/"), Some(("b", "late")));
        assert_eq!(claims.refusals("b", "late"), vec![]);
    }

    #[test]
    fn claims_made_in_the_same_second_rank_by_namespace_then_name() {
        let shop = hosts(&["Shop.Example.com"]);
        let same = hosts(&["shop.example.com."]);
        let mut claims = HostClaims::new(names());
        claims.claim(&claim("media", "b", at(10), &shop, "/api/"));
        claims.claim(&claim("media", "a", at(10), &same, "/api"));
        claims.claim(&claim("art", "z", at(10), &shop, "/api"));
        assert_eq!(
            claims.route("shop.example.com", "/api/x"),
            Some(("art", "z"))
        );
        assert_eq!(claims.refusals("media", "a").len(), 1);
        assert_eq!(claims.refusals("media", "b").len(), 1);
        // A function without a creation time ranks last.
        claims.claim(&claim("aaa", "unknown", None, &shop, "/api"));
        assert_eq!(claims.refusals("aaa", "unknown").len(), 1);
    }

    #[test]
    fn claims_on_different_paths_of_a_host_coexist_longest_first() {
        let img = hosts(&["img.example.com"]);
        let mut claims = HostClaims::new(names());
        claims.claim(&claim("media", "site", at(10), &img, "/"));
        claims.claim(&claim("media", "resize", at(20), &img, "/resize"));
        assert_eq!(
            claims.route("img.example.com", "/resize/x"),
            Some(("media", "resize"))
        );
        assert_eq!(
            claims.route("img.example.com", "/resized"),
            Some(("media", "site"))
        );
        assert!(claims.refusals("media", "resize").is_empty());
        assert!(claims.refusals("media", "site").is_empty());
    }

    #[test]
    fn a_function_without_http_claims_nothing() {
        let shop = hosts(&["shop.example.com"]);
        let mut claims = HostClaims::new(names());
        let mut disabled = claim("media", "off", at(1), &shop, "/");
        disabled.enabled = false;
        claims.claim(&disabled);
        claims.claim(&claim("media", "on", at(2), &shop, "/"));
        assert_eq!(claims.route("shop.example.com", "/"), Some(("media", "on")));
        assert!(claims.refusals("media", "on").is_empty());
    }

    fn function(yaml: &str) -> ServerlessFunction {
        serde_yaml::from_str(yaml).expect("a test function")
    }

    #[test]
    fn refusals_among_functions_name_the_holder() {
        let early = function(
            r#"
metadata: {name: shop, namespace: team-a, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {image: x, triggers: {http: {hosts: [shop.example.com]}}}
"#,
        );
        let late = function(
            r#"
metadata: {name: shop, namespace: team-b, creationTimestamp: "2026-01-02T00:00:00Z"}
spec: {image: x, triggers: {http: {hosts: [shop.example.com, thief.fargo.local]}}}
"#,
        );
        let all = [early.clone(), late.clone()];
        assert_eq!(refusals_among(&early, &all, &names()), vec![]);
        let refused = refusals_among(&late, &all, &names());
        let messages: Vec<String> = refused.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![
                "host \"shop.example.com\" with path \"/\" is held by function team-a/shop, \
                 which claimed it first",
                "host \"thief.fargo.local\" lies under fargo.local, where fargo names each \
                 function {function}.{namespace}.fargo.local",
            ]
        );
        assert_eq!(
            claimed_hosts(&late),
            hosts(&["shop.example.com", "thief.fargo.local"])
        );
    }
}
