//! Taking a torrent out of a running session (the daemon's pause and remove), and the
//! options torrents run with, changed while they run (the daemon's config).
//!
//! Adding is [`Session::add_torrent`]; a torrent taken out here can be added again later with
//! a fresh task (it re-checks its data on disk, as any start does).
use super::Session;
use crate::config::Options;
use crate::metainfo::InfoHash;
use std::sync::Arc;

impl Session {
    /// Stops the torrent named by `info_hash` and unroutes it: inbound connections for it are
    /// dropped from now on, and its tracker and DHT tasks end with its cancel token. Waits for
    /// its tasks to end. False when the session has no such torrent.
    pub async fn remove_torrent(&self, info_hash: &InfoHash) -> bool {
        let handle = self.torrents.lock().expect("routes lock").remove(info_hash);
        match handle {
            Some(h) => {
                h.shutdown().await;
                true
            }
            None => false,
        }
    }
}

impl Session {
    /// The options a torrent added now runs with.
    pub fn torrent_options(&self) -> Arc<Options> {
        self.torrent_options.lock().expect("torrent options lock").clone()
    }

    /// Sets the options of torrents added from now on and of the running ones (see
    /// [`crate::torrent::TorrentHandle::set_options`]), the session-wide rate limits, which
    /// apply to every peer at once, and the key-peer monitor's configured `key_peers`. Other
    /// session-wide settings (listener, inbound handshake bounds, send budget, node, tracker
    /// announces) stay as the session started.
    pub fn set_torrent_options(&self, options: Arc<Options>) {
        self.rates.download.set(options.download_rate_limit);
        self.rates.upload.set(options.upload_rate_limit);
        *self.torrent_options.lock().expect("torrent options lock") = options.clone();
        self.key_peer_list.send_if_modified(|list| {
            let changed = *list != options.key_peers;
            list.clone_from(&options.key_peers);
            changed
        });
        for handle in self.torrents() {
            handle.set_options(options.clone());
        }
    }

    /// The session-wide rate limits.
    pub fn rates(&self) -> &crate::peer::rate::Rates {
        &self.rates
    }
}
