//! The libp2p node's standing behind NAT: AutoNAT's verdict, the relay slots it holds, and
//! how its hole punches (DCUtR) ended, exported as `shoal_p2p_*`.
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Default)]
pub struct NatMetrics {
    reachability: Gauge,
    relay_reservations: Gauge,
    hole_punches: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl NatMetrics {
    /// 1 public, 0 unknown, -1 private.
    pub fn set_reachability(&self, value: i64) {
        self.reachability.set(value);
    }

    /// Relays we hold a slot on (others reach us through them).
    pub fn set_relay_reservations(&self, n: usize) {
        self.relay_reservations.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A hole punch ended: a direct connection replaced a relayed one, or not.
    pub fn inc_hole_punches(&self, success: bool) {
        self.hole_punches.get_or_create(&vec![("result", result(success))]).inc();
    }

    pub fn hole_punches(&self, success: bool) -> u64 {
        self.hole_punches.get_or_create(&vec![("result", result(success))]).get()
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        let help = "The libp2p node's reachability as AutoNAT judges it: 1 public, 0 unknown, -1 private";
        registry.register("reachability", help, self.reachability.clone());
        let help = "Circuit relays the libp2p node holds a reservation on (reachable through them)";
        registry.register("relay_reservations", help, self.relay_reservations.clone());
        for success in [true, false] {
            // Both series exist from the start, so a rate() over them never sees a gap.
            let _ = self.hole_punches.get_or_create(&vec![("result", result(success))]);
        }
        let help = "Hole punches (DCUtR) that upgraded a relayed connection to a direct one, or failed";
        registry.register("hole_punches", help, self.hole_punches.clone());
    }
}

fn result(success: bool) -> &'static str {
    if success {
        "success"
    } else {
        "failure"
    }
}
