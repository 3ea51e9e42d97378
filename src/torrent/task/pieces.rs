//! Complete pieces: handed to storage for the hash check and the write, and what follows
//! the verdict (have messages, smart-ban bans, completion).
use super::{Torrent, Verdict};
use crate::metrics::metrics;
use crate::peer::CloseReason;
use crate::peer::PeerCommand;
use crate::storage::PieceVerdict;
use crate::torrent::assembly::Finished;
use crate::torrent::smart_ban::{block_digests, Digest};
use crate::torrent::TorrentError;
use crate::torrent::{Phase, TorrentEvent};
use crate::types::PeerAddr;
use crate::types::PeerKey;
use crate::types::BLOCK_SIZE;

impl Torrent {
    /// Hands a complete piece to storage: hashed from memory, written only if it matches.
    /// Block digests for smart ban are made off the async threads when the piece failed or
    /// failed before.
    pub(super) fn verify(&mut self, piece: u32) {
        let Some(done) = self.assembly.take(piece) else { return };
        self.verifying += 1;
        let suspect = self.smart_ban.is_suspect(piece);
        let (storage, tx) = (self.storage.clone(), self.verdict_tx.clone());
        self.tasks.spawn(async move {
            let Finished { data, senders } = done;
            let result = storage.write_piece(piece, data.clone()).await;
            let need = suspect || matches!(result, Ok(PieceVerdict::HashFailed));
            let digests = match need {
                true => tokio::task::spawn_blocking(move || block_digests(&data, BLOCK_SIZE as usize)).await.ok(),
                false => {
                    drop(data); // the buffer is the assembly's again before the verdict is read
                    None
                }
            };
            let _ = tx.send(Verdict { piece, senders, digests, result }).await;
        });
    }

    /// Returns true when the phase changed.
    pub(super) async fn on_verdict(&mut self, v: Verdict) -> bool {
        self.verifying -= 1;
        match v.result {
            Ok(PieceVerdict::Written) => {
                self.picker.piece_verified(v.piece);
                self.stats.pieces_received += 1;
                metrics().inc_pieces_verified();
                self.emit(TorrentEvent::PieceVerified(v.piece));
                if let Some(t) = self.piece_started.remove(&v.piece) {
                    metrics().observe_piece_download(t.elapsed());
                }
                if let Some(good) = &v.digests {
                    let liars = self.smart_ban.piece_passed(v.piece, good);
                    self.ban_all(liars, v.piece);
                }
                self.announce_have(v.piece);
                if self.picker.is_complete() && !self.seeding() {
                    self.complete().await;
                    return true;
                }
            }
            Ok(PieceVerdict::HashFailed) => self.on_hash_failed(v.piece, &v.senders, v.digests.unwrap_or_default()),
            Err(e) => {
                // Fatal for the torrent, not a peer's fault; the command prints the one error line.
                self.fail(TorrentError::Write(e.to_string()));
                return true;
            }
        }
        self.fill_all_requests();
        false
    }

    /// Sends `have` to every peer and drops interest in those with nothing left for us. No
    /// top-up here: the caller refills every pipe in order afterwards
    /// ([`Torrent::fill_all_requests`]); topped up here, in map order, the first peer took the
    /// room the piece left every time.
    pub(super) fn announce_have(&mut self, piece: u32) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            let p = &self.peers[&k];
            let had = p.bitfield[piece as usize];
            if !p.command(PeerCommand::Have(piece)) {
                self.close(k, CloseReason::Lagging);
            } else if had && p.am_interested {
                self.refresh_interest(k);
            }
        }
    }

    /// A failed piece is fetched again. Smart ban decides who lied: the sender of every
    /// block at once, otherwise whoever's blocks differ from the good copy once it passes.
    pub(super) fn on_hash_failed(&mut self, piece: u32, senders: &[PeerAddr], digests: Vec<Digest>) {
        tracing::warn!(piece, peers = senders.len(), "piece failed its hash check");
        self.stats.hash_failures += 1;
        metrics().inc_hash_failures();
        self.piece_started.remove(&piece);
        self.picker.piece_failed(piece);
        if digests.len() == senders.len() {
            let blocks: Vec<(PeerAddr, Digest)> = senders.iter().cloned().zip(digests).collect();
            let liars = self.smart_ban.piece_failed(piece, &blocks);
            self.ban_all(liars, piece);
        }
    }

    /// Bans peers found lying about `piece` and closes their connections.
    pub(super) fn ban_all(&mut self, liars: Vec<PeerAddr>, piece: u32) {
        for a in liars {
            tracing::warn!(peer = %a, piece, "banned: sent data that failed the hash check");
            self.pool.ban(&a);
            metrics().inc_peers_banned();
            let keys: Vec<PeerKey> = self.peers.iter().filter(|(_, p)| p.addr == a).map(|(k, _)| *k).collect();
            for k in keys {
                self.close(k, CloseReason::Banned);
            }
        }
    }

    pub(super) async fn complete(&mut self) {
        if let Err(e) = self.storage.finalize(self.opts.sync_on_complete).await {
            return self.fail(TorrentError::Finalize(e.to_string()));
        }
        tracing::info!(name = %self.meta.name, "download complete, every piece verified");
        self.assembly.drop_spare();
        self.stats.phase = Phase::Seeding;
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        self.stats.completed_at_ms = since_epoch.ok().map(|d| d.as_millis() as u64);
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.update_interest(k);
        }
    }
}
