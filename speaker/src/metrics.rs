//! The speaker's /metrics, with prometheus-client as in the operator and the
//! webhook: the layer 2 and fast-failover counters are prometheus-client
//! metrics updated where things happen; the BGP sessions' figures are read
//! from their status at scrape time. Every name starts with `ferrolb_speaker_`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::bgp;
use crate::failover::Counters as FailoverCounters;
use crate::l2::responder::Counters;

/// Registers every speaker metric.
pub fn registry(
    l2: &Counters,
    failover: &FailoverCounters,
    kernel_answers_arp: &Gauge,
    sessions: bgp::Registry,
) -> Registry {
    let mut registry = Registry::with_prefix("ferrolb_speaker");
    let counters = [
        (
            "arp_requests",
            "ARP requests for an IP this node announces",
            &l2.arp_requests,
        ),
        ("arp_replies", "ARP replies sent", &l2.arp_replies),
        (
            "ndp_requests",
            "Neighbor Solicitations for an IP this node announces",
            &l2.ndp_requests,
        ),
        (
            "ndp_replies",
            "Neighbor Advertisements sent in reply",
            &l2.ndp_replies,
        ),
        (
            "gratuitous",
            "Gratuitous ARPs and unsolicited Neighbor Advertisements sent",
            &l2.gratuitous,
        ),
        (
            "gratuitous_claims_seen",
            "Gratuitous ARPs from another MAC for an IP this node answered for (it yields the IP)",
            &l2.claims_seen,
        ),
        (
            "malformed_frames",
            "Frames dropped as malformed",
            &l2.malformed,
        ),
        (
            "failover_probes_sent",
            "Fast failover probes sent to active nodes",
            &failover.probes_sent,
        ),
        (
            "failover_probe_replies",
            "Signed answers to fast failover probes",
            &failover.replies,
        ),
        (
            "failover_takeovers",
            "IPs taken over from an active node that stopped answering",
            &failover.takeovers,
        ),
        (
            "failover_handoffs_received",
            "IPs received from a stopping node",
            &failover.handoffs_received,
        ),
        (
            "failover_refused_datagrams",
            "Failover datagrams refused (bad signature, malformed, stale or replayed)",
            &failover.refused,
        ),
        (
            "failover_unavailable",
            "Times fast failover towards an active node became unavailable (never answered, or silent while alive)",
            &failover.unavailable,
        ),
    ];
    for (name, help, counter) in counters {
        registry.register(name, help, counter.clone());
    }
    registry.register(
        "failover_unavailable_nodes",
        "Active nodes this node stands by for whose speaker does not answer probes",
        failover.unavailable_now.clone(),
    );
    registry.register(
        "kernel_answers_arp",
        "1 while this node's kernel answers ARP for Service IPs (kube-proxy IPVS without strictARP)",
        kernel_answers_arp.clone(),
    );
    registry.register_collector(Box::new(Sessions(sessions)));
    registry
}

/// The BGP sessions, read at scrape time.
#[derive(Debug)]
struct Sessions(bgp::Registry);

impl Collector for Sessions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sessions = self.0.snapshot();
        for family in bgp::FAMILIES {
            let values: Vec<(&str, u64)> = sessions
                .iter()
                .map(|(name, status)| (name.as_str(), (family.pick)(status)))
                .collect();
            if family.counter {
                let mut descriptor = encoder.encode_descriptor(
                    family.name,
                    family.help,
                    None,
                    ConstCounter::new(0u64).metric_type(),
                )?;
                for (session, value) in values {
                    let labels = [("session", session)];
                    let metric = descriptor.encode_family(&labels)?;
                    ConstCounter::new(value).encode(metric)?;
                }
            } else {
                let mut descriptor = encoder.encode_descriptor(
                    family.name,
                    family.help,
                    None,
                    ConstGauge::new(0i64).metric_type(),
                )?;
                for (session, value) in values {
                    let labels = [("session", session)];
                    let metric = descriptor.encode_family(&labels)?;
                    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_counter_once_with_the_speaker_prefix() {
        let l2 = Counters::default();
        let failover = FailoverCounters::default();
        let kernel = Gauge::default();
        let registry = registry(&l2, &failover, &kernel, bgp::Registry::default());
        l2.arp_requests.inc();
        failover.takeovers.inc_by(2);
        failover.unavailable_now.set(1);
        kernel.set(1);
        let page = ferrolb_runtime::encode(&registry);
        for line in [
            "ferrolb_speaker_arp_requests_total 1",
            "ferrolb_speaker_failover_takeovers_total 2",
            "ferrolb_speaker_failover_unavailable_nodes 1",
            "ferrolb_speaker_kernel_answers_arp 1",
            "# TYPE ferrolb_speaker_bgp_session_up gauge",
            "# TYPE ferrolb_speaker_bgp_updates_sent counter",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} missing:\n{page}");
        }
        assert!(page.ends_with("# EOF\n"));
    }
}
