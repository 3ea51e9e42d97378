//! The tick: rates, scores, the choker round (and the upload shares of those it unchokes),
//! pool upkeep and the call for more peers.
use super::Torrent;
use crate::manager::{score, share, ChokeCandidate, ScoreScale};
use crate::peer::CloseReason;
use crate::torrent::TorrentEvent;
use crate::types::PeerKey;
use tokio::time::Instant;

impl Torrent {
    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        let dt = now - self.last_tick;
        self.last_tick = now;
        self.update_rates_and_timeouts(now, dt);
        self.aim_at_sole_pieces();
        self.update_scores();
        // A slot holder that stopped reading gives its slot up now, not at the next round, and
        // so does a seeder's holder that asks for nothing while another peer waits.
        let holder_stalled = self.peers.values().any(|p| !p.am_choking && p.counters.stalled());
        let holder_idle = self.seeding()
            && self.peers.values().any(|p| p.am_choking && p.peer_interested)
            && self.peers.values().any(|p| !p.am_choking && p.wastes_slot(now));
        if self.choker.due(now.into_std()) || holder_stalled || holder_idle {
            self.rechoke(now);
        }
        self.close_seed_to_seed();
        self.super_seed_tick(now);
        self.pool.maintain(now.into_std());
        self.assembly.tick(now.into_std());
        if self.pool.needs_slot() {
            self.evict_useless(now);
        }
        self.dial_more();
        self.send_pex();
        // Signalled on the edge, when the pool runs dry, not on every tick while it is dry.
        let needs = self.pool.needs_more_peers() && !self.seeding();
        if needs && !self.wanted_peers {
            self.need_peers.send_modify(|n| *n += 1);
            self.emit(TorrentEvent::NeedPeers);
        }
        self.wanted_peers = needs;
        self.fill_all_requests();
    }

    pub(super) fn update_scores(&mut self) {
        let inputs: Vec<(PeerKey, _)> =
            self.peers.iter().map(|(k, p)| (*k, p.score_inputs(self.picker.rarity_value(&p.bitfield)))).collect();
        let scale = ScoreScale::of(inputs.iter().map(|(_, i)| i));
        for (k, i) in inputs {
            let parts = score(&i, &scale);
            let p = self.peer_mut(k);
            p.score = parts;
            let addr = p.addr;
            self.pool.set_score(&addr, parts.total);
        }
    }

    pub(super) fn rechoke(&mut self, now: Instant) {
        let candidates: Vec<ChokeCandidate> = self.peers.iter().map(|(k, p)| p.choke_candidate(*k)).collect();
        let seeding = self.seeding();
        let round = self.choker.round(now.into_std(), &candidates, seeding, &mut self.rng);
        tracing::debug!(
            unchoked = ?round.unchoke.iter().map(|k| self.peers[k].addr).collect::<Vec<_>>(),
            optimistic = ?round.optimistic.map(|k| self.peers[&k].addr),
            "choker round"
        );
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            let unchoke = round.unchoke.contains(&k);
            let regular = unchoke && round.optimistic != Some(k);
            let p = self.peer_mut(k);
            if let Some(cmd) = p.apply_round(unchoke, regular, now) {
                if !p.command(cmd) {
                    self.close(k, CloseReason::Lagging);
                }
            }
        }
        self.split_upload(&round.unchoke, seeding);
    }

    /// Each unchoked peer's share of the upload limit, by what it sends us (none while
    /// seeding: nobody sends us anything to weigh by).
    fn split_upload(&mut self, unchoked: &std::collections::HashSet<PeerKey>, seeding: bool) {
        let limit = if seeding { 0 } else { self.rates.upload_limit() };
        let given: Vec<(PeerKey, f64)> = unchoked.iter().map(|k| (*k, self.peers[k].rate_down.get())).collect();
        for (k, cap) in share::split(limit, &given) {
            self.peers[&k].upload_share.set(cap);
        }
    }
}
