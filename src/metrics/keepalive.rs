//! The key-peer monitor's counters, defined once by a macro so the struct, its `inc_*`
//! methods, the exported names and the JSON snapshot cannot drift apart.
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Defines the keepalive counters once, so the struct, its `inc_*` methods, the exported
/// names and the JSON snapshot cannot drift apart.
macro_rules! keepalive_counters {
    ($($name:ident, $inc:ident, $help:literal;)*) => {
        /// Counters of the key-peer monitor, exported as `shoal_keepalive_<name>_total`.
        #[derive(Debug, Default)]
        pub struct KeepaliveCounters {
            $($name: Counter,)*
        }

        /// The keepalive counters at one instant, as served by `/debug/p2p/keepalive/metrics`.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct KeepaliveSnapshot {
            $(pub $name: u64,)*
        }

        impl KeepaliveCounters {
            $(
                #[doc = $help]
                pub fn $inc(&self) {
                    self.$name.inc();
                }
            )*

            pub fn snapshot(&self) -> KeepaliveSnapshot {
                KeepaliveSnapshot { $($name: self.$name.get(),)* }
            }

            pub(super) fn register(&self, registry: &mut Registry) {
                $(registry.register(stringify!($name), $help, self.$name.clone());)*
            }
        }
    };
}

keepalive_counters! {
    probe_attempts, inc_probe_attempts, "Probes sent to key peers";
    probe_success, inc_probe_success, "Probes a key peer answered";
    probe_fail, inc_probe_fail, "Probes that failed or timed out";
    reconnect_attempts, inc_reconnect_attempts, "Redials of a key peer";
    reconnect_success, inc_reconnect_success, "Redials of a key peer that connected";
    repair_triggered, inc_repair_triggered, "Repairs started after repeated probe failures";
    repair_success, inc_repair_success, "Repairs that reconnected the key peer";
    repair_fail, inc_repair_fail, "Repairs that did not reconnect the key peer";
    reset_events_published, inc_reset_events_published, "Discovery interval resets published";
}
