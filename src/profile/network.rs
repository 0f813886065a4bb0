//! The VPC stand-in: the NetworkPolicy that fences a profile's pods in one namespace.
//!
//! The policy selects the profile's pods by their `fargo.dev/profile` label and lists both policy
//! types, so everything not allowed here is denied both ways. What is allowed is the profile's
//! own `egress`/`ingress` rules plus three built-ins: DNS, the profile's other pods (the
//! "security group"), and the fargo activator, which must reach function pods to wake and proxy
//! to them.
//!
//! A pod's labels are its own to write wherever no profile judges it, so the profile's other pods
//! are recognised by namespace as well as by label: only pods in the namespaces the profile
//! selects, where the webhook admitted them and keeps their label as admitted, count.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::profile::{EgressRule, FargateProfile, IngressRule, PortRule, Protocol};
use crate::api::{
    ACTIVATOR_POD_LABELS, APP_NAME, MANAGED_BY_LABEL, NAMESPACE_NAME_LABEL, PROFILE_LABEL,
};

/// What the fence lets through besides the profile's own rules: the cluster's parts a Fargate
/// pod needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Surroundings {
    /// Where the fargo activator runs (`fargo-system` when installed by the Helm chart); its
    /// pods may always connect to the profile's pods.
    pub activator_namespace: String,
    /// The cluster's DNS servers, the only place `allowDNS` opens port 53 to.
    pub dns: ClusterDns,
}

/// The cluster's DNS servers: the pods behind the cluster DNS Service (CoreDNS is
/// `k8s-app=kube-dns` in `kube-system` on kubeadm, kind, EKS and most distributions), and
/// optionally the address of a node-local DNS cache.
///
/// A NetworkPolicy sees a packet to the DNS Service's ClusterIP after it was translated to one
/// of these pods, so naming the pods covers the Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
    /// The link-local address NodeLocal DNSCache listens on (often `169.254.20.10`).
    pub node_local: Option<IpAddr>,
}

impl Default for ClusterDns {
    fn default() -> Self {
        Self {
            namespace: "kube-system".into(),
            pod_labels: [("k8s-app".to_string(), "kube-dns".to_string())].into(),
            node_local: None,
        }
    }
}

impl ClusterDns {
    /// The peers of the DNS rule.
    fn peers(&self) -> Vec<NetworkPolicyPeer> {
        let mut peers = vec![NetworkPolicyPeer {
            namespace_selector: Some(match_labels([(
                NAMESPACE_NAME_LABEL,
                self.namespace.as_str(),
            )])),
            pod_selector: Some(match_labels(
                self.pod_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )),
            ip_block: None,
        }];
        if let Some(address) = self.node_local {
            let bits = if address.is_ipv4() { 32 } else { 128 };
            peers.push(NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: format!("{address}/{bits}"),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            });
        }
        peers
    }
}

/// The NetworkPolicy `fargo-<profile>` that profile keeps in `namespace`.
///
/// `profile_namespaces` are all the namespaces the profile selects (`namespace` counts whether
/// listed or not): the profile's pods there are the "same profile" peers. The policy is owned by
/// the profile (when the profile has a uid), so it goes when the profile goes.
pub fn network_policy(
    profile: &FargateProfile,
    namespace: &str,
    profile_namespaces: &BTreeSet<String>,
    surroundings: &Surroundings,
) -> NetworkPolicy {
    let name = profile.name_any();
    let network = &profile.spec.network;
    let profile_pods = match_labels([(PROFILE_LABEL, name.as_str())]);
    let mut peer_namespaces = profile_namespaces.clone();
    peer_namespaces.insert(namespace.to_string());

    let mut egress = vec![];
    if network.allow_dns {
        // Only to the cluster's DNS servers: port 53 open to every address would carry any
        // traffic a pod wants out of the fence.
        egress.push(NetworkPolicyEgressRule {
            to: Some(surroundings.dns.peers()),
            ports: Some(vec![port(53, Protocol::Udp), port(53, Protocol::Tcp)]),
        });
    }
    if network.allow_same_profile {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![same_profile_peer(&profile_pods, &peer_namespaces)]),
            ports: None,
        });
    }
    egress.extend(network.egress.iter().filter_map(egress_rule));

    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(match_labels([(
                NAMESPACE_NAME_LABEL,
                surroundings.activator_namespace.as_str(),
            )])),
            pod_selector: Some(match_labels(ACTIVATOR_POD_LABELS)),
            ip_block: None,
        }]),
        ports: None,
    }];
    if network.allow_same_profile {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![same_profile_peer(&profile_pods, &peer_namespaces)]),
            ports: None,
        });
    }
    ingress.extend(network.ingress.iter().filter_map(ingress_rule));

    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(profile.network_policy_name()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(MANAGED_BY_LABEL, APP_NAME), (PROFILE_LABEL, name.as_str())]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: profile.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(profile_pods),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            egress: Some(egress),
            ingress: Some(ingress),
        }),
    }
}

/// The profile's pods in the namespaces it selects: the profile may span namespaces
/// (`payments-*`), but a pod elsewhere that carries the profile label was judged by no profile.
///
/// The namespaces are named through `kubernetes.io/metadata.name`, which the API server sets to
/// each namespace's name and lets no one change, rather than through a label fargo would write:
/// whoever may label namespaces could copy such a label onto another namespace, and a label left
/// behind by a failed cleanup would keep a namespace inside the fence.
fn same_profile_peer(
    profile_pods: &LabelSelector,
    namespaces: &BTreeSet<String>,
) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(namespaces.iter().cloned().collect()),
            }]),
        }),
        pod_selector: Some(profile_pods.clone()),
        ip_block: None,
    }
}

/// A profile egress rule as a NetworkPolicy rule. A rule with no destination is dropped rather
/// than turned into "any destination" (the CRD's validation already refuses it): an empty `to`
/// would open the fence instead of narrowing it.
fn egress_rule(rule: &EgressRule) -> Option<NetworkPolicyEgressRule> {
    let mut to = vec![];
    if let Some(cidr) = &rule.cidr {
        to.push(NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.clone(),
                except: (!rule.except.is_empty()).then(|| rule.except.clone()),
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    if rule.namespace_selector.is_some() || rule.pod_selector.is_some() {
        to.push(NetworkPolicyPeer {
            namespace_selector: rule.namespace_selector.clone(),
            pod_selector: rule.pod_selector.clone(),
            ip_block: None,
        });
    }
    (!to.is_empty()).then(|| NetworkPolicyEgressRule {
        to: Some(to),
        ports: ports(&rule.ports),
    })
}

/// A profile ingress rule as a NetworkPolicy rule; as for egress, a rule with no source is
/// dropped rather than read as "from anywhere".
fn ingress_rule(rule: &IngressRule) -> Option<NetworkPolicyIngressRule> {
    if rule.namespace_selector.is_none() && rule.pod_selector.is_none() {
        return None;
    }
    Some(NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: rule.namespace_selector.clone(),
            pod_selector: rule.pod_selector.clone(),
            ip_block: None,
        }]),
        ports: ports(&rule.ports),
    })
}

/// No ports in the profile means every port, which NetworkPolicy spells as no `ports` at all.
fn ports(rules: &[PortRule]) -> Option<Vec<NetworkPolicyPort>> {
    (!rules.is_empty()).then(|| {
        rules
            .iter()
            .map(|rule| port(rule.port, rule.protocol))
            .collect()
    })
}

fn port(number: i32, protocol: Protocol) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.as_str().to_string()),
        end_port: None,
    }
}

fn match_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        match_expressions: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn profile(yaml: &str) -> FargateProfile {
        serde_yaml::from_str(yaml).expect("valid profile fixture")
    }

    fn surroundings(activator_namespace: &str) -> Surroundings {
        Surroundings {
            activator_namespace: activator_namespace.into(),
            dns: ClusterDns::default(),
        }
    }

    fn namespaces(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    /// Whether `selector` selects an object with `labels`, as the NetworkPolicy enforcer reads
    /// it; enough of the label-selector semantics for the selectors fargo writes.
    fn selects(selector: &LabelSelector, labels: &[(&str, &str)]) -> bool {
        let value = |key: &str| labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let by_labels = selector
            .match_labels
            .iter()
            .flatten()
            .all(|(key, wanted)| value(key) == Some(wanted.as_str()));
        let by_expressions = selector.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            match r.operator.as_str() {
                "In" => value(&r.key).is_some_and(|v| values.iter().any(|w| w == v)),
                other => panic!("operator {other} is not one fargo writes"),
            }
        });
        by_labels && by_expressions
    }

    /// The profile of DESIGN.md, as a user writes it.
    const DESIGN_EXAMPLE: &str = r#"
apiVersion: fargo.dev/v1alpha1
kind: FargateProfile
metadata: {name: payments, uid: 5d1c1b8e-0000-4000-8000-000000000001}
spec:
  selectors:
    - namespace: payments-*
      labels: {tier: backend}
  runtimeClassName: gvisor
  sizing: {policy: Fargate, overhead: 256Mi}
  network:
    allowDNS: true
    allowSameProfile: true
    egress:
      - cidr: 10.20.0.0/16
        except: [10.20.99.0/24]
        ports: [{port: 5432, protocol: TCP}]
      - namespaceSelector: {matchLabels: {team: shared}}
    ingress:
      - namespaceSelector: {matchLabels: {team: web}}
        podSelector: {matchLabels: {app: frontend}}
  scheduling:
    nodeSelector: {fargo.dev/capacity: fargate}
  deletionPolicy: Orphan
"#;

    #[test]
    fn design_example_profile_fences_its_pods_as_documented() {
        let policy = network_policy(
            &profile(DESIGN_EXAMPLE),
            "payments-media",
            &namespaces(&["payments-eu", "payments-media"]),
            &surroundings("fargo-system"),
        );
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {
                    "name": "fargo-payments",
                    "namespace": "payments-media",
                    "labels": {
                        "app.kubernetes.io/managed-by": "fargo",
                        "fargo.dev/profile": "payments",
                    },
                    "ownerReferences": [{
                        "apiVersion": "fargo.dev/v1alpha1",
                        "kind": "FargateProfile",
                        "name": "payments",
                        "uid": "5d1c1b8e-0000-4000-8000-000000000001",
                        "controller": true,
                    }],
                },
                "spec": {
                    "podSelector": {"matchLabels": {"fargo.dev/profile": "payments"}},
                    "policyTypes": ["Ingress", "Egress"],
                    "egress": [
                        // allowDNS: the cluster's DNS pods, port 53 only.
                        {
                            "to": [{
                                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }],
                            "ports": [
                                {"port": 53, "protocol": "UDP"},
                                {"port": 53, "protocol": "TCP"},
                            ],
                        },
                        // allowSameProfile: the profile's pods in the profile's namespaces.
                        {"to": [{
                            "namespaceSelector": {"matchExpressions": [{
                                "key": "kubernetes.io/metadata.name",
                                "operator": "In",
                                "values": ["payments-eu", "payments-media"],
                            }]},
                            "podSelector": {"matchLabels": {"fargo.dev/profile": "payments"}},
                        }]},
                        // The "subnet": a CIDR with an exception, one port.
                        {
                            "to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.99.0/24"]}}],
                            "ports": [{"port": 5432, "protocol": "TCP"}],
                        },
                        // Shared namespaces, every port.
                        {"to": [{"namespaceSelector": {"matchLabels": {"team": "shared"}}}]},
                    ],
                    "ingress": [
                        // Always: the fargo activator.
                        {"from": [{
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "fargo-system"}},
                            "podSelector": {"matchLabels": {
                                "app.kubernetes.io/name": "fargo",
                                "app.kubernetes.io/component": "activator",
                            }},
                        }]},
                        {"from": [{
                            "namespaceSelector": {"matchExpressions": [{
                                "key": "kubernetes.io/metadata.name",
                                "operator": "In",
                                "values": ["payments-eu", "payments-media"],
                            }]},
                            "podSelector": {"matchLabels": {"fargo.dev/profile": "payments"}},
                        }]},
                        {"from": [{
                            "namespaceSelector": {"matchLabels": {"team": "web"}},
                            "podSelector": {"matchLabels": {"app": "frontend"}},
                        }]},
                    ],
                },
            })
        );
    }

    #[test]
    fn same_profile_peers_are_the_profiles_pods_in_the_profiles_namespaces_only() {
        let policy = network_policy(
            &profile(DESIGN_EXAMPLE),
            "payments-media",
            &namespaces(&["payments-eu"]),
            &surroundings("fargo-system"),
        );
        let spec = policy.spec.unwrap();
        let (egress, ingress) = (spec.egress.unwrap(), spec.ingress.unwrap());
        let same_profile = [
            &egress[1].to.as_ref().unwrap()[0],
            &ingress[1].from.as_ref().unwrap()[0],
        ];
        let namespace = |name: &'static str| [(NAMESPACE_NAME_LABEL, name)];
        let claims_payments = [(PROFILE_LABEL, "payments"), ("app", "api")];
        for peer in same_profile {
            let (namespaces, pods) = (
                peer.namespace_selector.as_ref().unwrap(),
                peer.pod_selector.as_ref().unwrap(),
            );
            // The profile's pods in each of its namespaces, the policy's own included.
            for selected in ["payments-eu", "payments-media"] {
                assert!(selects(namespaces, &namespace(selected)), "{selected}");
            }
            assert!(selects(pods, &claims_payments));
            assert!(!selects(pods, &[("app", "api")]));
            // A pod that labels itself into the profile where no profile judged it: its labels
            // match, its namespace does not, whatever other labels the namespace carries.
            let elsewhere = [
                (NAMESPACE_NAME_LABEL, "web"),
                (PROFILE_LABEL, "payments"),
                ("fargo.dev/profiled", "true"),
            ];
            assert!(!selects(namespaces, &elsewhere));
            assert!(!selects(namespaces, &[]));
        }
    }

    #[test]
    fn profile_without_allowances_denies_everything_but_the_activator() {
        let closed = profile(
            r#"
metadata: {name: vault}
spec:
  selectors: [{namespace: vault}]
  network: {allowDNS: false, allowSameProfile: false}
"#,
        );
        let policy = network_policy(
            &closed,
            "vault",
            &namespaces(&["vault"]),
            &surroundings("fargo-system"),
        );
        let spec = policy.spec.unwrap();
        assert_eq!(spec.egress, Some(vec![]), "egress denied entirely");
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".into(), "Egress".into()])
        );
        let ingress = spec.ingress.unwrap();
        assert_eq!(ingress.len(), 1);
        let from = &ingress[0].from.as_ref().unwrap()[0];
        assert_eq!(
            from.namespace_selector,
            Some(match_labels([(NAMESPACE_NAME_LABEL, "fargo-system")]))
        );
        assert_eq!(policy.metadata.name.as_deref(), Some("fargo-vault"));
        assert_eq!(policy.metadata.owner_references, None, "no uid, no owner");
    }

    #[test]
    fn network_defaults_allow_dns_and_same_profile() {
        let defaults = profile(
            r#"
metadata: {name: web}
spec:
  selectors: [{namespace: web}]
"#,
        );
        let spec = network_policy(
            &defaults,
            "web",
            &namespaces(&["web"]),
            &surroundings("fargo"),
        )
        .spec
        .unwrap();
        assert_eq!(spec.egress.map(|rules| rules.len()), Some(2));
        assert_eq!(spec.ingress.map(|rules| rules.len()), Some(2));
    }

    #[test]
    fn egress_ports_keep_their_protocols_and_pod_selectors_stay_in_namespace() {
        let rules = profile(
            r#"
metadata: {name: p}
spec:
  selectors: [{namespace: p}]
  network:
    allowDNS: false
    allowSameProfile: false
    egress:
      - podSelector: {matchLabels: {app: cache}}
        ports: [{port: 6379}, {port: 5000, protocol: UDP}, {port: 9, protocol: SCTP}]
    ingress:
      - podSelector: {matchLabels: {app: web}}
        ports: [{port: 8080}]
"#,
        );
        let spec = network_policy(
            &rules,
            "p",
            &namespaces(&["p"]),
            &surroundings("fargo-system"),
        )
        .spec
        .unwrap();
        assert_eq!(
            serde_json::to_value(spec.egress.unwrap()).unwrap(),
            json!([{
                "to": [{"podSelector": {"matchLabels": {"app": "cache"}}}],
                "ports": [
                    {"port": 6379, "protocol": "TCP"},
                    {"port": 5000, "protocol": "UDP"},
                    {"port": 9, "protocol": "SCTP"},
                ],
            }])
        );
        assert_eq!(
            serde_json::to_value(&spec.ingress.unwrap()[1]).unwrap(),
            json!({
                "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                "ports": [{"port": 8080, "protocol": "TCP"}],
            })
        );
    }

    #[test]
    fn rules_without_a_peer_never_open_the_fence() {
        assert_eq!(egress_rule(&EgressRule::default()), None);
        assert_eq!(ingress_rule(&IngressRule::default()), None);
    }

    #[test]
    fn cidr_without_exceptions_has_no_except_list() {
        let rule = EgressRule {
            cidr: Some("0.0.0.0/0".into()),
            ..EgressRule::default()
        };
        assert_eq!(
            serde_json::to_value(egress_rule(&rule)).unwrap(),
            json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
        );
    }

    #[test]
    fn dns_is_open_only_to_the_clusters_dns_servers() {
        let defaults = profile(
            r#"
metadata: {name: web}
spec:
  selectors: [{namespace: web}]
"#,
        );
        let mut surroundings = surroundings("fargo-system");
        surroundings.dns = ClusterDns {
            namespace: "dns".into(),
            pod_labels: [("app".to_string(), "resolver".to_string())].into(),
            node_local: Some("169.254.20.10".parse().unwrap()),
        };
        let spec = network_policy(&defaults, "web", &namespaces(&["web"]), &surroundings)
            .spec
            .unwrap();
        let dns = &spec.egress.unwrap()[0];
        assert_eq!(
            serde_json::to_value(dns).unwrap(),
            json!({
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
                        "podSelector": {"matchLabels": {"app": "resolver"}},
                    },
                    {"ipBlock": {"cidr": "169.254.20.10/32"}},
                ],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            })
        );
    }
}
