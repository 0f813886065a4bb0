//! Which function a request is for: by path (`/{namespace}/{function}/…`), by the function's
//! own host name (`{function}.{namespace}.<domain>`) or by a host from `triggers.http.hosts`
//! (who holds which host is [`crate::api::routes`]' decision, shared with the controller).
//!
//! Pure: the table is filled from the ServerlessFunction watch and read on every request, so
//! lookups borrow the request's host and path and allocate nothing.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use jiff::Timestamp;

use crate::api::function::HttpAuth;
use crate::api::routes::{ActivatorNames, Claim, HostClaims, Refusal, host_name};

/// How a function takes HTTP requests (its `spec.triggers.http`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    pub enabled: bool,
    /// Extra host names, besides `{function}.{namespace}.<domain>`.
    pub hosts: Vec<String>,
    /// Path prefix that requests on `hosts` must start with.
    pub path: String,
    /// When the function was created: of two claims on a host and path, the earlier wins.
    pub created: Option<Timestamp>,
    /// Who may call it over HTTP (`triggers.http.auth`).
    pub auth: HttpAuth,
}

impl Default for HttpRoute {
    fn default() -> Self {
        Self {
            enabled: true,
            hosts: vec![],
            path: "/".into(),
            created: None,
            auth: HttpAuth::None,
        }
    }
}

/// A request matched to a function.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a, T> {
    pub target: &'a T,
    /// Whether requests must be signed (`triggers.http.auth`).
    pub auth: HttpAuth,
    /// Bytes to cut from the front of the request path before proxying (the
    /// `/{namespace}/{function}` prefix); an empty remainder stands for `/`.
    pub strip: usize,
}

/// Why a request matches no function; the text is the body of the 404.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no function \"{name}\" in namespace \"{namespace}\"")]
    UnknownFunction { namespace: String, name: String },
    #[error(
        "function \"{name}\" in namespace \"{namespace}\" does not take HTTP requests \
         (spec.triggers.http.enabled is false)"
    )]
    Disabled { namespace: String, name: String },
    /// Not a function's request: the Lambda API (`/2015-03-31/functions…`) on a host no
    /// function holds.
    #[error("the Lambda API")]
    LambdaApi,
    /// Not a function's request: object-storage notifications
    /// ([`super::storage::PATH`]) on a host no function holds.
    #[error("object-storage notifications")]
    StorageEvents,
    #[error(
        "no function is served at host \"{host}\", path \"{path}\": use \
         /{{namespace}}/{{function}}/ or the host {{function}}.{{namespace}}.{domain}"
    )]
    NoRoute {
        host: String,
        path: String,
        domain: String,
    },
}

/// Every routable function, by name and by host.
#[derive(Debug)]
pub struct RouteTable<T> {
    /// namespace → function → entry. Hashed with a seed of the process's own (as the standard
    /// hasher is, so that names cannot be chosen to collide) by a hasher a few times faster
    /// than the standard one: every request is routed here.
    functions: HashMap<String, HashMap<String, Entry<T>, RandomState>, RandomState>,
    /// Who holds which host.
    claims: HostClaims,
}

#[derive(Debug)]
struct Entry<T> {
    target: T,
    http: HttpRoute,
}

impl<T> RouteTable<T> {
    pub fn new(names: ActivatorNames) -> Self {
        Self {
            functions: HashMap::default(),
            claims: HostClaims::new(names),
        }
    }

    pub fn len(&self) -> usize {
        self.functions.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.functions
            .get(namespace)
            .and_then(|functions| functions.get(name))
            .map(|entry| &entry.target)
    }

    /// Adds or replaces a function. Returns the hosts it claims that no function may claim,
    /// when its claims changed (so each is reported once, not on every status update).
    pub fn upsert(
        &mut self,
        namespace: &str,
        name: &str,
        http: HttpRoute,
        target: T,
    ) -> Vec<Refusal> {
        let unchanged = self
            .functions
            .get(namespace)
            .and_then(|functions| functions.get(name))
            .is_some_and(|entry| entry.http == http);
        let refused = if unchanged {
            vec![]
        } else {
            self.claims.claim(&Claim {
                namespace,
                name,
                created: http.created,
                enabled: http.enabled,
                hosts: &http.hosts,
                path: &http.path,
            })
        };
        self.functions
            .entry(namespace.to_string())
            .or_default()
            .insert(name.to_string(), Entry { target, http });
        refused
    }

    /// Removes a function; gives back its target.
    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<T> {
        self.claims.withdraw(namespace, name);
        let functions = self.functions.get_mut(namespace)?;
        let removed = functions.remove(name).map(|entry| entry.target);
        if functions.is_empty() {
            self.functions.remove(namespace);
        }
        removed
    }

    /// Every function, as `(namespace, name)`.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.functions.iter().flat_map(|(namespace, functions)| {
            functions
                .keys()
                .map(move |name| (namespace.as_str(), name.as_str()))
        })
    }

    /// The function a request with this `Host` header and path is for.
    ///
    /// Hosts from `triggers.http.hosts` come first (the holder of the longest matching path
    /// prefix wins, the path is passed on whole), then `{function}.{namespace}.<domain>` (path
    /// passed on whole), then the Lambda API ([`LAMBDA_API_PREFIX`]: it comes before a namespace
    /// that would be named `2015-03-31`), then `/{namespace}/{function}/rest` (only `/rest` is
    /// passed on). No
    /// function holds the activator's own names, so a request addressed to the activator by
    /// name is always routed by its path.
    pub fn resolve<'a>(
        &'a self,
        host: Option<&str>,
        path: &str,
    ) -> Result<Route<'a, T>, RouteError> {
        if let Some(host) = host {
            let host = host_name(host);
            if let Some((namespace, name)) = self.claims.route(&host, path) {
                return self.lookup(namespace, name, 0);
            }
            if let Some((namespace, name)) = self.function_host(&host) {
                return self.lookup(namespace, name, 0);
            }
        }
        if is_lambda_api(path) {
            return Err(RouteError::LambdaApi);
        }
        if path == super::storage::PATH {
            return Err(RouteError::StorageEvents);
        }
        match split_function_path(path) {
            Some((namespace, name, strip)) => self.lookup(namespace, name, strip),
            None => Err(RouteError::NoRoute {
                host: host.unwrap_or_default().to_string(),
                path: path.to_string(),
                domain: self.claims.names().domain().to_string(),
            }),
        }
    }

    fn lookup<'a>(
        &'a self,
        namespace: &str,
        name: &str,
        strip: usize,
    ) -> Result<Route<'a, T>, RouteError> {
        let entry = self
            .functions
            .get(namespace)
            .and_then(|functions| functions.get(name))
            .ok_or_else(|| RouteError::UnknownFunction {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })?;
        if !entry.http.enabled {
            return Err(RouteError::Disabled {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        Ok(Route {
            target: &entry.target,
            auth: entry.http.auth,
            strip,
        })
    }

    /// `(namespace, function)` of a host `{function}.{namespace}.<domain>`.
    fn function_host<'h>(&self, host: &'h str) -> Option<(&'h str, &'h str)> {
        let domain = self.claims.names().domain();
        let rest = host.strip_suffix(domain)?.strip_suffix('.')?;
        // Searched byte by byte, as `host_name` searches for the port.
        let dot = rest.bytes().rposition(|b| b == b'.')?;
        let (name, namespace) = (&rest[..dot], &rest[dot + 1..]);
        (!name.is_empty() && !namespace.is_empty()).then_some((namespace, name))
    }
}

/// Where the Lambda API's function operations live (its 2015-03-31 version).
pub const LAMBDA_API_PREFIX: &str = "/2015-03-31/functions";

fn is_lambda_api(path: &str) -> bool {
    path.strip_prefix(LAMBDA_API_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `(namespace, function, bytes of the prefix)` of `/{namespace}/{function}[/rest]`.
fn split_function_path(path: &str) -> Option<(&str, &str, usize)> {
    let rest = path.strip_prefix('/')?;
    let (namespace, rest) = rest.split_once('/')?;
    let name = rest.split_once('/').map_or(rest, |(name, _)| name);
    if namespace.is_empty() || name.is_empty() {
        return None;
    }
    Some((namespace, name, 1 + namespace.len() + 1 + name.len()))
}

/// The path to send upstream: the request path without the first `strip` bytes, `/` when
/// nothing is left.
pub fn upstream_path(path: &str, strip: usize) -> &str {
    match path.get(strip..) {
        Some("") | None => "/",
        Some(rest) => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ActivatorNames {
        ActivatorNames::new("fargo-activator", "fargo-system", "fargo.local")
    }

    fn table() -> RouteTable<&'static str> {
        let mut table = RouteTable::new(names());
        table.upsert("media", "thumbnail", HttpRoute::default(), "thumbnail");
        table.upsert(
            "media",
            "resize",
            HttpRoute {
                enabled: true,
                hosts: vec!["img.example.com".into()],
                path: "/resize/".into(),
                ..HttpRoute::default()
            },
            "resize",
        );
        table.upsert(
            "media",
            "site",
            HttpRoute {
                enabled: true,
                hosts: vec!["img.example.com".into()],
                path: "/".into(),
                ..HttpRoute::default()
            },
            "site",
        );
        table.upsert(
            "media",
            "internal",
            HttpRoute {
                enabled: false,
                hosts: vec!["internal.example.com".into()],
                path: "/".into(),
                ..HttpRoute::default()
            },
            "internal",
        );
        table
    }

    fn routed(
        table: &RouteTable<&'static str>,
        host: Option<&str>,
        path: &str,
    ) -> (String, String) {
        let route = table.resolve(host, path).expect("request is routed");
        (
            route.target.to_string(),
            upstream_path(path, route.strip).to_string(),
        )
    }

    #[test]
    fn path_route_strips_namespace_and_function() {
        let table = table();
        let host = Some("fargo-activator.fargo-system.svc");
        assert_eq!(
            routed(&table, host, "/media/thumbnail/a/b.png"),
            ("thumbnail".into(), "/a/b.png".into())
        );
        assert_eq!(
            routed(&table, host, "/media/thumbnail/"),
            ("thumbnail".into(), "/".into())
        );
    }

    #[test]
    fn the_lambda_api_comes_after_hosts_and_before_path_routes() {
        let table = table();
        let activator = Some("fargo-activator.fargo-system.svc");
        for path in [
            "/2015-03-31/functions",
            "/2015-03-31/functions/",
            "/2015-03-31/functions/echo/invocations",
        ] {
            assert_eq!(
                table.resolve(activator, path).err(),
                Some(RouteError::LambdaApi)
            );
        }
        assert!(matches!(
            table.resolve(activator, "/2015-03-31/functionsx"),
            Err(RouteError::UnknownFunction { .. })
        ));
        // A function's own host keeps its whole path space.
        assert_eq!(
            routed(
                &table,
                Some("thumbnail.media.fargo.local"),
                "/2015-03-31/functions/x"
            ),
            ("thumbnail".into(), "/2015-03-31/functions/x".into())
        );
    }

    #[test]
    fn storage_notifications_have_their_own_path_no_namespace_can_take() {
        let table = table();
        let activator = Some("fargo-activator.fargo-system.svc");
        assert_eq!(
            table.resolve(activator, "/_fargo/storage/events").err(),
            Some(RouteError::StorageEvents)
        );
        assert!(matches!(
            table.resolve(activator, "/_fargo/storage/events/x"),
            Err(RouteError::UnknownFunction { .. })
        ));
        assert_eq!(
            routed(
                &table,
                Some("thumbnail.media.fargo.local"),
                "/_fargo/storage/events"
            ),
            ("thumbnail".into(), "/_fargo/storage/events".into())
        );
    }

    #[test]
    fn path_route_without_trailing_slash_proxies_root() {
        assert_eq!(
            routed(&table(), None, "/media/thumbnail"),
            ("thumbnail".into(), "/".into())
        );
    }

    #[test]
    fn function_host_routes_whole_path() {
        let table = table();
        assert_eq!(
            routed(&table, Some("thumbnail.media.fargo.local"), "/a"),
            ("thumbnail".into(), "/a".into())
        );
        assert_eq!(
            routed(&table, Some("Thumbnail.Media.Fargo.Local:8080"), "/media/x"),
            ("thumbnail".into(), "/media/x".into())
        );
    }

    #[test]
    fn custom_host_picks_longest_matching_path_prefix() {
        let table = table();
        let host = Some("img.example.com");
        assert_eq!(
            routed(&table, host, "/resize/x.png"),
            ("resize".into(), "/resize/x.png".into())
        );
        assert_eq!(
            routed(&table, host, "/resize"),
            ("resize".into(), "/resize".into())
        );
        assert_eq!(
            routed(&table, host, "/resized"),
            ("site".into(), "/resized".into())
        );
        assert_eq!(routed(&table, host, "/"), ("site".into(), "/".into()));
    }

    #[test]
    fn custom_host_with_unmatched_prefix_falls_back_to_path_route() {
        let mut table = RouteTable::new(names());
        table.upsert(
            "media",
            "resize",
            HttpRoute {
                enabled: true,
                hosts: vec!["img.example.com".into()],
                path: "/resize".into(),
                ..HttpRoute::default()
            },
            "resize",
        );
        table.upsert("media", "thumbnail", HttpRoute::default(), "thumbnail");
        assert_eq!(
            routed(&table, Some("img.example.com"), "/media/thumbnail/x"),
            ("thumbnail".into(), "/x".into())
        );
        assert!(matches!(
            table.resolve(Some("img.example.com"), "/other"),
            Err(RouteError::NoRoute { .. })
        ));
    }

    #[test]
    fn unknown_function_is_reported_by_name() {
        let error = table()
            .resolve(None, "/media/missing/x")
            .expect_err("no such function");
        assert_eq!(
            error.to_string(),
            "no function \"missing\" in namespace \"media\""
        );
        let error = table()
            .resolve(Some("missing.media.fargo.local"), "/")
            .expect_err("no such function");
        assert!(matches!(error, RouteError::UnknownFunction { .. }));
    }

    #[test]
    fn disabled_function_is_not_routed() {
        let table = table();
        for (host, path) in [
            (None, "/media/internal/"),
            (Some("internal.media.fargo.local"), "/"),
        ] {
            let error = table.resolve(host, path).expect_err("function is disabled");
            assert!(matches!(error, RouteError::Disabled { .. }), "{error}");
            assert!(error.to_string().contains("triggers.http.enabled"));
        }
        // Its own hosts are not indexed at all.
        assert!(matches!(
            table.resolve(Some("internal.example.com"), "/"),
            Err(RouteError::NoRoute { .. })
        ));
    }

    #[test]
    fn paths_that_name_no_function_are_not_routed() {
        let table = table();
        for path in ["/", "/media", "/media/", "//thumbnail"] {
            let error = table.resolve(None, path).expect_err("no function in path");
            assert!(
                matches!(error, RouteError::NoRoute { .. }),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn replacing_a_function_moves_its_hosts() {
        let mut table = table();
        table.upsert(
            "media",
            "resize",
            HttpRoute {
                enabled: true,
                hosts: vec!["resize.example.com".into()],
                path: "/".into(),
                ..HttpRoute::default()
            },
            "resize",
        );
        assert_eq!(
            routed(&table, Some("img.example.com"), "/resize/x"),
            ("site".into(), "/resize/x".into())
        );
        assert_eq!(
            routed(&table, Some("resize.example.com"), "/x"),
            ("resize".into(), "/x".into())
        );
        assert_eq!(table.remove("media", "resize"), Some("resize"));
        assert!(matches!(
            table.resolve(Some("resize.example.com"), "/x"),
            Err(RouteError::NoRoute { .. })
        ));
        assert_eq!(table.len(), 3);
    }

    fn claiming(hosts: &[&str], created: i64) -> HttpRoute {
        HttpRoute {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            created: Some(Timestamp::from_second(created).expect("a valid time")),
            ..HttpRoute::default()
        }
    }

    #[test]
    fn a_claim_on_the_activators_own_name_takes_no_path_routed_request() {
        let mut table = table();
        let refused = table.upsert(
            "evil",
            "thief",
            claiming(
                &[
                    "fargo-activator.fargo-system.svc",
                    "thumbnail.media.fargo.local",
                    "10.96.0.10",
                ],
                1,
            ),
            "thief",
        );
        assert_eq!(refused.len(), 3, "{refused:?}");
        for host in [
            "fargo-activator.fargo-system.svc",
            "fargo-activator.fargo-system.svc.cluster.local:80",
            "10.96.0.10",
        ] {
            assert_eq!(
                routed(&table, Some(host), "/media/thumbnail/x"),
                ("thumbnail".into(), "/x".into()),
                "{host}"
            );
        }
        assert_eq!(
            routed(&table, Some("thumbnail.media.fargo.local"), "/"),
            ("thumbnail".into(), "/".into())
        );
        // Reported when the claim is new or changes, not on every update of the function.
        let again = table.upsert(
            "evil",
            "thief",
            claiming(
                &[
                    "fargo-activator.fargo-system.svc",
                    "thumbnail.media.fargo.local",
                    "10.96.0.10",
                ],
                1,
            ),
            "thief",
        );
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn the_earlier_of_two_functions_claiming_a_host_gets_its_requests() {
        let mut table = RouteTable::new(names());
        table.upsert(
            "team-b",
            "late",
            claiming(&["shop.example.com"], 20),
            "late",
        );
        table.upsert(
            "team-a",
            "early",
            claiming(&["shop.example.com"], 10),
            "early",
        );
        assert_eq!(
            routed(&table, Some("shop.example.com"), "/cart"),
            ("early".into(), "/cart".into())
        );
        table.remove("team-a", "early");
        assert_eq!(
            routed(&table, Some("shop.example.com"), "/cart"),
            ("late".into(), "/cart".into())
        );
    }
}
