//! Choice among a function's pods: the usable pod with the fewest requests in flight, never
//! above `concurrency.perInstance`.
//!
//! A pod is usable when its EndpointSlice says it is ready, or — before the kubelet's readiness
//! reaches the EndpointSlice — when the activator's own probe got an HTTP answer from it.

use std::net::SocketAddr;

use hyper::http::uri::Authority;

/// Identifies one pod for as long as it is listed; a reused address gets a new id.
pub type PodId = u64;

/// An address as the function's EndpointSlices list it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `conditions.ready` (an absent condition counts as ready, as the API says).
    pub ready: bool,
    pub terminating: bool,
}

/// A place taken on a pod for one request; give it back with [`Balancer::release`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub pod: PodId,
    pub addr: SocketAddr,
    /// `addr` as the authority of upstream URIs, made once per pod.
    pub authority: Authority,
}

#[derive(Debug)]
struct Pod {
    id: PodId,
    addr: SocketAddr,
    authority: Authority,
    in_flight: u32,
    /// The EndpointSlice says ready.
    ready: bool,
    /// The EndpointSlice has said ready at some point: from then on only its word counts.
    was_ready: bool,
    /// The activator's probe got an HTTP answer.
    alive: bool,
    terminating: bool,
    /// A probe task is running for this pod.
    probing: bool,
}

impl Pod {
    fn usable(&self) -> bool {
        !self.terminating && (self.ready || (self.alive && !self.was_ready))
    }

    fn needs_probe(&self) -> bool {
        !self.terminating && !self.ready && !self.was_ready && !self.alive
    }
}

/// A function's pods and the requests in flight on each.
#[derive(Debug, Default)]
pub struct Balancer {
    pods: Vec<Pod>,
    /// Hard limit of requests in flight per pod; 0 is unlimited.
    per_instance: u32,
    in_flight: u32,
    next_id: PodId,
    /// Where the next scan starts, so that ties spread over pods.
    cursor: usize,
}

impl Balancer {
    pub fn new(per_instance: u32) -> Self {
        Self {
            per_instance,
            ..Self::default()
        }
    }

    pub fn set_per_instance(&mut self, per_instance: u32) {
        self.per_instance = per_instance;
    }

    /// Requests in flight on all pods.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn usable_count(&self) -> usize {
        self.pods.iter().filter(|pod| pod.usable()).count()
    }

    pub fn has_usable(&self) -> bool {
        self.pods.iter().any(Pod::usable)
    }

    /// Replaces the pods with what the EndpointSlices list now, keeping the requests in flight
    /// and probe results of pods that stay. Returns the pods to start probing (not ready, not
    /// probed yet, no probe running); they are marked as being probed.
    pub fn set_endpoints(&mut self, endpoints: &[Endpoint]) -> Vec<SocketAddr> {
        let mut old = std::mem::take(&mut self.pods);
        let mut to_probe = vec![];
        for endpoint in endpoints {
            // The same address may be listed by two slices while they are rebalanced.
            if let Some(pod) = self.pods.iter_mut().find(|p| p.addr == endpoint.addr) {
                pod.ready |= endpoint.ready;
                pod.was_ready |= endpoint.ready;
                pod.terminating &= endpoint.terminating;
                continue;
            }
            let mut pod = match old.iter().position(|p| p.addr == endpoint.addr) {
                Some(index) => old.swap_remove(index),
                None => {
                    self.next_id += 1;
                    Pod {
                        id: self.next_id,
                        addr: endpoint.addr,
                        authority: authority_of(endpoint.addr),
                        in_flight: 0,
                        ready: false,
                        was_ready: false,
                        alive: false,
                        terminating: false,
                        probing: false,
                    }
                }
            };
            pod.ready = endpoint.ready;
            pod.was_ready |= endpoint.ready;
            pod.terminating = endpoint.terminating;
            self.pods.push(pod);
        }
        for pod in &mut self.pods {
            if pod.needs_probe() && !pod.probing {
                pod.probing = true;
                to_probe.push(pod.addr);
            }
        }
        // Requests still running on pods that went away no longer count against anything.
        self.in_flight = self.pods.iter().map(|p| p.in_flight).sum();
        to_probe
    }

    /// Whether the pod at `addr` is listed and not yet known to be usable.
    pub fn needs_probe(&self, addr: SocketAddr) -> bool {
        self.pods
            .iter()
            .any(|pod| pod.addr == addr && pod.needs_probe())
    }

    /// Records that the pod at `addr` answered HTTP; true when that made it usable.
    pub fn mark_alive(&mut self, addr: SocketAddr) -> bool {
        match self.pods.iter_mut().find(|pod| pod.addr == addr) {
            Some(pod) => {
                let was_usable = pod.usable();
                pod.alive = true;
                !was_usable && pod.usable()
            }
            None => false,
        }
    }

    /// Records that the probe of `addr` stopped, so a later listing may start another.
    pub fn probe_finished(&mut self, addr: SocketAddr) {
        if let Some(pod) = self.pods.iter_mut().find(|pod| pod.addr == addr) {
            pod.probing = false;
        }
    }

    /// Takes a place on the usable pod with the fewest requests in flight, if one is below
    /// the per-instance limit.
    pub fn pick(&mut self) -> Option<Slot> {
        self.pick_excluding(None)
    }

    /// As [`pick`](Self::pick), on any pod but `excluded`.
    pub fn pick_other(&mut self, excluded: PodId) -> Option<Slot> {
        self.pick_excluding(Some(excluded))
    }

    fn pick_excluding(&mut self, excluded: Option<PodId>) -> Option<Slot> {
        let count = self.pods.len();
        if count == 0 {
            return None;
        }
        let start = self.cursor % count;
        self.cursor = self.cursor.wrapping_add(1);
        let mut best: Option<usize> = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            let pod = &self.pods[index];
            if !pod.usable()
                || Some(pod.id) == excluded
                || (self.per_instance > 0 && pod.in_flight >= self.per_instance)
            {
                continue;
            }
            if best.is_none_or(|b| pod.in_flight < self.pods[b].in_flight) {
                best = Some(index);
            }
        }
        let pod = &mut self.pods[best?];
        pod.in_flight += 1;
        self.in_flight += 1;
        Some(Slot {
            pod: pod.id,
            addr: pod.addr,
            authority: pod.authority.clone(),
        })
    }

    /// Gives back a place taken by [`pick`](Self::pick).
    pub fn release(&mut self, pod: PodId) {
        if let Some(pod) = self.pods.iter_mut().find(|p| p.id == pod)
            && pod.in_flight > 0
        {
            pod.in_flight -= 1;
            self.in_flight -= 1;
        }
    }
}

fn authority_of(addr: SocketAddr) -> Authority {
    // A socket address always renders as a valid authority (`[v6]:port` for IPv6).
    Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(last_octet: u8) -> Endpoint {
        Endpoint {
            addr: SocketAddr::from(([10, 0, 0, last_octet], 8080)),
            ready: true,
            terminating: false,
        }
    }

    fn starting(last_octet: u8) -> Endpoint {
        Endpoint {
            ready: false,
            ..ready(last_octet)
        }
    }

    #[test]
    fn picks_the_pod_with_fewest_requests_in_flight() {
        let mut balancer = Balancer::new(0);
        balancer.set_endpoints(&[ready(1), ready(2), ready(3)]);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..9 {
            let slot = balancer.pick().expect("unlimited pods take requests");
            *counts.entry(slot.addr).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n == 3), "{counts:?}");

        // Freeing two places on one pod sends the next two requests there.
        let first = SocketAddr::from(([10, 0, 0, 1], 8080));
        let id = balancer.pods.iter().find(|p| p.addr == first).map(|p| p.id);
        let id = id.expect("pod is listed");
        balancer.release(id);
        balancer.release(id);
        assert_eq!(balancer.pick().map(|s| s.addr), Some(first));
        assert_eq!(balancer.pick().map(|s| s.addr), Some(first));
        assert_eq!(balancer.in_flight(), 9);
    }

    #[test]
    fn per_instance_is_a_hard_limit() {
        let mut balancer = Balancer::new(2);
        balancer.set_endpoints(&[ready(1), ready(2)]);
        let slots: Vec<Slot> = (0..4).filter_map(|_| balancer.pick()).collect();
        assert_eq!(slots.len(), 4);
        assert_eq!(balancer.pick(), None, "both pods are at perInstance");
        balancer.release(slots[0].pod);
        assert_eq!(balancer.pick().map(|s| s.addr), Some(slots[0].addr));
        assert_eq!(balancer.pick(), None);
    }

    #[test]
    fn raising_per_instance_frees_places() {
        let mut balancer = Balancer::new(1);
        balancer.set_endpoints(&[ready(1)]);
        assert!(balancer.pick().is_some());
        assert!(balancer.pick().is_none());
        balancer.set_per_instance(0);
        assert!(balancer.pick().is_some());
    }

    #[test]
    fn pods_not_ready_are_probed_and_usable_once_alive() {
        let mut balancer = Balancer::new(0);
        let to_probe = balancer.set_endpoints(&[starting(1)]);
        assert_eq!(to_probe, vec![starting(1).addr]);
        assert!(balancer.pick().is_none(), "a starting pod takes no request");
        // The same listing again starts no second probe.
        assert!(balancer.set_endpoints(&[starting(1)]).is_empty());
        assert!(balancer.needs_probe(starting(1).addr));

        assert!(balancer.mark_alive(starting(1).addr));
        assert!(!balancer.needs_probe(starting(1).addr));
        assert_eq!(balancer.pick().map(|s| s.addr), Some(starting(1).addr));
        // A later listing that still says not ready keeps the probe's verdict.
        balancer.set_endpoints(&[starting(1)]);
        assert!(balancer.has_usable());
        assert_eq!(balancer.in_flight(), 1);
    }

    #[test]
    fn pod_that_was_ready_and_then_not_is_not_used() {
        let mut balancer = Balancer::new(0);
        balancer.set_endpoints(&[ready(1)]);
        balancer.mark_alive(ready(1).addr);
        assert!(balancer.set_endpoints(&[starting(1)]).is_empty());
        assert!(!balancer.has_usable());
    }

    #[test]
    fn terminating_pods_take_no_requests() {
        let mut balancer = Balancer::new(0);
        let leaving = Endpoint {
            terminating: true,
            ready: false,
            ..ready(1)
        };
        assert!(balancer.set_endpoints(&[leaving]).is_empty());
        assert!(balancer.pick().is_none());
    }

    #[test]
    fn a_pod_that_goes_away_stops_counting_its_requests() {
        let mut balancer = Balancer::new(0);
        balancer.set_endpoints(&[ready(1), ready(2)]);
        let a = balancer.pick().expect("a pod is free");
        let b = balancer.pick().expect("a pod is free");
        let gone = if a.addr == ready(1).addr { &a } else { &b };
        let stays = if a.addr == ready(1).addr { &b } else { &a };
        balancer.set_endpoints(&[ready(2)]);
        assert_eq!(balancer.in_flight(), 1);
        balancer.release(gone.pod);
        assert_eq!(balancer.in_flight(), 1);
        // The address coming back is a new pod: the old slot cannot free its places.
        balancer.set_endpoints(&[ready(1), ready(2)]);
        balancer.release(gone.pod);
        balancer.release(stays.pod);
        assert_eq!(balancer.in_flight(), 0);
    }

    #[test]
    fn retry_goes_to_another_pod() {
        let mut balancer = Balancer::new(0);
        balancer.set_endpoints(&[ready(1), ready(2)]);
        let first = balancer.pick().expect("a pod is free");
        let second = balancer.pick_other(first.pod).expect("another pod is free");
        assert_ne!(first.addr, second.addr);
        let mut alone = Balancer::new(0);
        alone.set_endpoints(&[ready(1)]);
        let only = alone.pick().expect("a pod is free");
        assert!(alone.pick_other(only.pod).is_none());
    }

    #[test]
    fn ipv6_pods_get_bracketed_authorities() {
        let mut balancer = Balancer::new(0);
        let addr: SocketAddr = "[fd00::1]:8080".parse().expect("valid address");
        balancer.set_endpoints(&[Endpoint {
            addr,
            ready: true,
            terminating: false,
        }]);
        let slot = balancer.pick().expect("a pod is free");
        assert_eq!(slot.authority.as_str(), "[fd00::1]:8080");
    }
}
