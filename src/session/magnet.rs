//! A magnet's info dict fetched through this session: its dialler (TCP, or libp2p when a
//! node runs), its peer id, and while the fetch runs two more sources of peers: the magnet's
//! trackers (announced to, `stopped` at the end), when a node runs, the shoal DHT's
//! providers of the torrent, and when a mainline node runs, its `get_peers` answers.
use super::Session;
use crate::discovery::tracker::announcer::{self, AnnouncerConfig, AnnouncerLinks};
use crate::discovery::tracker::TransferTotals;
use crate::mainline::MainlineHandle;
use crate::metadata::{self, FetchConfig, FetchStatus, MetadataError};
use crate::metainfo::{InfoHash, Magnet};
use crate::p2p::{peer_addr, torrent_key, NodeHandle};
use crate::types::PeerAddr;
use crate::wire::metadata::METADATA_PIECE;
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Longest a peer may go without sending anything useful during the fetch.
const IDLE: Duration = Duration::from_secs(20);
/// DHT lookups for providers: the first at once, then this far apart, doubling up to a minute.
const DHT_RETRY: Duration = Duration::from_secs(5);
const DHT_RETRY_MAX: Duration = Duration::from_secs(60);

impl Session {
    /// Fetches the info dict of `magnet` from `peers` and from whoever its trackers name,
    /// within `deadline`; `status` follows the fetch. Trackers are left (`stopped`) when it
    /// returns.
    pub async fn fetch_metadata(
        &self,
        magnet: &Magnet,
        peers: Vec<PeerAddr>,
        deadline: Duration,
        status: watch::Sender<FetchStatus>,
    ) -> Result<Bytes, MetadataError> {
        let cfg = FetchConfig {
            info_hash: magnet.info_hash,
            peer_id: self.peer_id,
            connector: self.connector.clone(),
            connect_timeout: self.options.connect_timeout,
            handshake_timeout: self.options.handshake_timeout,
            idle: IDLE,
            deadline,
        };
        let (more_tx, more_rx) = mpsc::channel(16);
        let cancel = self.cancel.child_token();
        let _stop_trackers = cancel.clone().drop_guard();
        if !magnet.trackers.is_empty() {
            self.magnet_trackers(magnet, more_tx.clone(), cancel.clone());
        }
        if let Some(node) = self.node.clone() {
            self.tasks.spawn(dht_providers(node, magnet.info_hash, more_tx.clone(), cancel.clone()));
        }
        if let Some(dht) = self.mainline.clone() {
            let bounds = (self.options.max_addrs_per_message, self.options.dht_query_timeout);
            self.tasks.spawn(mainline_peers(dht, magnet.info_hash, bounds, more_tx.clone(), cancel));
        }
        // With no tracker and no DHT the channel closes now, so the fetch knows when nobody
        // is left to ask instead of waiting out its deadline.
        drop(more_tx);
        metadata::fetch(cfg, peers, more_rx, status).await
    }

    /// Announces to the magnet's trackers (one tier each) and passes what they return on.
    fn magnet_trackers(&self, magnet: &Magnet, more: mpsc::Sender<Vec<PeerAddr>>, cancel: CancellationToken) {
        let cfg = AnnouncerConfig {
            peer_id: self.peer_id,
            info_hash: magnet.info_hash,
            port: self.listen_addr.map(|a| a.port()).unwrap_or(0),
            numwant: self.options.numwant,
            timeout: self.options.tracker_timeout,
            min_interval: self.options.tracker_min_interval,
        };
        // The size is unknown until the dict arrives; any `left` above zero says "leecher",
        // so trackers that give seeders only to leechers still do.
        let totals = TransferTotals { uploaded: 0, downloaded: 0, left: METADATA_PIECE as u64 };
        let (totals_tx, totals_rx) = watch::channel(totals);
        let (peers_tx, mut peers_rx) = mpsc::channel::<Vec<std::net::SocketAddr>>(16);
        let tiers = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
        let links = AnnouncerLinks { need_peers: None, status: None };
        let announcer = announcer::spawn(tiers, cfg, totals_rx, peers_tx, links, cancel.clone());
        self.tasks.spawn(async move {
            // The announcer ends when cancelled; the totals sender lives as long as it does.
            let _totals = totals_tx;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    batch = peers_rx.recv() => match batch {
                        Some(b) => {
                            if more.send(b.into_iter().map(PeerAddr::Tcp).collect()).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            let _ = announcer.await;
        });
    }
}

/// Looks the torrent up in the shoal DHT until cancelled, passing its providers on.
async fn dht_providers(
    node: NodeHandle,
    info_hash: InfoHash,
    more: mpsc::Sender<Vec<PeerAddr>>,
    cancel: CancellationToken,
) {
    let key = torrent_key(&info_hash);
    let mut wait = DHT_RETRY;
    loop {
        let found = tokio::select! {
            _ = cancel.cancelled() => return,
            r = node.get_providers(key.clone()) => r,
        };
        match found {
            Ok(providers) => {
                tracing::info!(%info_hash, providers = providers.len(), "DHT lookup for metadata");
                let addrs: Vec<PeerAddr> =
                    providers.iter().filter(|(_, addrs)| !addrs.is_empty()).map(|(p, _)| peer_addr(p)).collect();
                if !addrs.is_empty() && more.send(addrs).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!(%info_hash, error = %e, "DHT lookup for metadata failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(DHT_RETRY_MAX);
    }
}

/// Looks the torrent up in the mainline DHT until cancelled (at most `max` addresses a
/// lookup, each lookup at most `timeout`), passing its peers on.
async fn mainline_peers(
    dht: MainlineHandle,
    info_hash: InfoHash,
    (max, timeout): (usize, Duration),
    more: mpsc::Sender<Vec<PeerAddr>>,
    cancel: CancellationToken,
) {
    let mut wait = DHT_RETRY;
    loop {
        let mut batches = Box::pin(dht.get_peers(&info_hash, max, timeout));
        let mut found = 0;
        loop {
            let batch = tokio::select! {
                _ = cancel.cancelled() => return,
                b = batches.next() => match b { Some(b) => b, None => break },
            };
            found += batch.len();
            if more.send(batch.into_iter().map(PeerAddr::Tcp).collect()).await.is_err() {
                return;
            }
        }
        tracing::info!(%info_hash, peers = found, "mainline get_peers lookup for metadata");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(DHT_RETRY_MAX);
    }
}
