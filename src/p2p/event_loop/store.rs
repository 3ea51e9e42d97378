//! What other peers may leave in our Kademlia store.
//!
//! Kademlia lets any peer store a value (PUT_VALUE) or itself as a provider of a key
//! (ADD_PROVIDER) on us. Left to `libp2p-kad`, both go into the store as they come:
//! - values: up to 1,024 of up to 16 KiB each (the protocol's message size). shoal never
//!   publishes or looks up values, only providers, so those would be memory a stranger holds
//!   for nothing;
//! - provider records: up to 1,024 keys with 20 providers each, and each record keeps the
//!   addresses its provider listed, as many as fit in a 16 KiB message. A stranger with fresh
//!   PeerIds could make us hold about 320 MiB of addresses until the records expire.
//!
//! So the behaviour hands both to us (`StoreInserts::FilterBoth`, set in `super::swarm`):
//! values are dropped, and a provider record is stored with as many of its addresses as the
//! address book keeps for a peer ([`MAX_ADDRS_PER_PEER`], 8), each at most [`MAX_ADDR_BYTES`]
//! long: at most 2 KiB of addresses a record, 40 MiB in all. A PeerId to dial and a few
//! addresses are all a torrent's lookup needs; more come from identify once connected.
use super::super::book::MAX_ADDRS_PER_PEER;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, InboundRequest, ProviderRecord};

/// The longest address kept: a relayed circuit with two PeerIds is about 150 bytes.
pub const MAX_ADDR_BYTES: usize = 256;

/// Takes what a peer asked us to store.
pub(super) fn on_inbound(store: &mut kad::store::MemoryStore, request: InboundRequest) {
    match request {
        InboundRequest::AddProvider { record: Some(record) } => {
            if let Err(e) = store.add_provider(admitted(record)) {
                tracing::debug!("kad: provider record not stored: {e}");
            }
        }
        InboundRequest::PutRecord { source, record: Some(record), .. } => {
            tracing::debug!(%source, key = ?record.key, "kad: value not stored (shoal keeps none)");
        }
        _ => {}
    }
}

/// `record` with at most [`MAX_ADDRS_PER_PEER`] of its addresses, none longer than
/// [`MAX_ADDR_BYTES`], in the order the provider listed them.
pub fn admitted(mut record: ProviderRecord) -> ProviderRecord {
    record.addresses.retain(|a| a.len() <= MAX_ADDR_BYTES);
    record.addresses.truncate(MAX_ADDRS_PER_PEER);
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::{Multiaddr, PeerId};

    #[test]
    fn a_provider_record_keeps_a_few_short_addresses_in_order() {
        let long: Multiaddr = format!("/dns4/{}.example/tcp/1", "a".repeat(300)).parse().unwrap();
        let short = |i: u16| -> Multiaddr { format!("/ip4/127.0.0.1/tcp/{i}").parse().unwrap() };
        let mut addresses = vec![long.clone()];
        addresses.extend((1..=100).map(short));
        let key = kad::RecordKey::new(&b"torrent");
        let record = ProviderRecord { key, provider: PeerId::random(), expires: None, addresses };
        let kept = admitted(record.clone());
        assert_eq!(kept.addresses, (1..=8).map(short).collect::<Vec<_>>());
        assert_eq!((&kept.key, kept.provider), (&record.key, record.provider));

        let mut store = kad::store::MemoryStore::new(PeerId::random());
        on_inbound(&mut store, InboundRequest::AddProvider { record: Some(record.clone()) });
        let stored = store.providers(&record.key);
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].addresses.len(), MAX_ADDRS_PER_PEER);
    }
}
