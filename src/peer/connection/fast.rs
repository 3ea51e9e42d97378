//! The peer task's side of the BEP 6 fast extension, on only when both handshakes set the
//! fast bit: our opening (have-all / have-none / bitfield, then the allowed-fast set we grant),
//! the fast messages a peer sends (checked and bounded before the torrent hears of them), and
//! the reject that answers every request we will not serve.
//!
//! Rules enforced here: a fast message from a peer that did not negotiate fast closes the
//! connection; have-all and have-none are only taken before any other piece state (bitfield,
//! have); every index is checked against the torrent. A stranger's allowed-fast messages are
//! remembered up to [`MAX_ALLOWED_FAST_KEPT`] distinct pieces (later ones ignored), and
//! suggestions are checked and ignored, so neither can grow our state.
use super::Task;
use crate::peer::{PeerError, PeerEventKind};
use crate::types::BlockRef;
use crate::wire::fast::MAX_ALLOWED_FAST_KEPT;
use crate::wire::Message;
use bitvec::prelude::*;
use bytes::Bytes;

/// What the peer told us under the fast extension.
#[derive(Debug, Default)]
pub(super) struct FastState {
    /// A bitfield, have, have-all or have-none arrived: have-all/have-none may not follow.
    pub piece_state_seen: bool,
    /// Distinct allowed-fast pieces the peer gave us (forwarded to the torrent).
    pub allowed_in: Vec<u32>,
}

impl Task {
    /// Our piece state as BEP 6 asks when fast is on (have-all or have-none where they fit),
    /// else the BEP 3 bitfield (omitted when we have nothing); then our allowed-fast set.
    pub(super) fn send_piece_state(&mut self) {
        let have = &self.ctx.have;
        let msg = match (self.ctx.fast, have.all(), have.any()) {
            (true, true, _) => Some(Message::HaveAll),
            (true, false, false) => Some(Message::HaveNone),
            (_, _, true) => Some(Message::Bitfield(Bytes::copy_from_slice(have.as_raw_slice()))),
            (false, _, false) => None,
        };
        if let Some(msg) = msg {
            let _ = self.out.push(msg);
        }
        if self.ctx.fast {
            // Only pieces we show (a request for another would only be rejected): the set is
            // what the peer was told, so a piece shown later can still be granted.
            let have = &self.ctx.have;
            self.ctx.allowed_fast.retain(|&i| have.get(i as usize).is_some_and(|b| *b));
            for index in self.ctx.allowed_fast.clone() {
                let _ = self.out.push(Message::AllowedFast { index });
            }
        }
    }

    /// Grants `piece`, one the peer was shown, as allowed-fast: it may fetch it while we
    /// choke it. Repeats are dropped, and the grants stop at what a shoal peer keeps
    /// ([`MAX_ALLOWED_FAST_KEPT`], the set sent at the start included).
    pub(super) fn grant_allowed_fast(&mut self, piece: u32) -> Result<(), PeerError> {
        let shown = self.ctx.have.get(piece as usize).is_some_and(|b| *b);
        let granted = &mut self.ctx.allowed_fast;
        if self.ctx.fast && shown && !granted.contains(&piece) && granted.len() < MAX_ALLOWED_FAST_KEPT {
            granted.push(piece);
            self.out.push(Message::AllowedFast { index: piece })?;
        }
        Ok(())
    }

    /// Whether we serve this piece to the peer now: unchoked, or in the set we granted it.
    pub(super) fn may_serve(&self, piece: u32) -> bool {
        !self.am_choking || (self.ctx.fast && self.ctx.allowed_fast.contains(&piece))
    }

    /// Tells a fast peer we will not serve `b`; a peer without fast expects silence (BEP 3).
    pub(super) fn reject(&mut self, b: BlockRef) -> Result<(), PeerError> {
        if self.ctx.fast {
            self.out.push(Message::Reject { index: b.piece, begin: b.begin, length: b.length })?;
        }
        Ok(())
    }

    /// A bitfield or have arrived: have-all / have-none may no longer come.
    pub(super) fn saw_piece_state(&mut self) {
        self.fast_in.piece_state_seen = true;
    }

    /// One of the five BEP 6 messages; `None` when there is nothing to tell the torrent.
    pub(super) fn on_fast_message(&mut self, msg: Message) -> Result<Option<PeerEventKind>, PeerError> {
        if !self.ctx.fast {
            return Err(PeerError::Protocol(format!("fast extension message {msg:?} without negotiating it")));
        }
        match msg {
            Message::HaveAll | Message::HaveNone => {
                if self.fast_in.piece_state_seen {
                    return Err(PeerError::Protocol("have-all or have-none after other piece state".into()));
                }
                self.fast_in.piece_state_seen = true;
                let n = self.ctx.geometry.piece_count() as usize;
                Ok((msg == Message::HaveAll).then(|| PeerEventKind::Bitfield(bitvec![u8, Msb0; 1; n])))
            }
            Message::Suggest { index } => {
                self.check_piece(index)?;
                Ok(None)
            }
            Message::Reject { index, begin, length } => {
                let b = BlockRef { piece: index, begin, length };
                self.check_block("reject", b)?;
                Ok(Some(PeerEventKind::Rejected(b)))
            }
            Message::AllowedFast { index } => {
                self.check_piece(index)?;
                let seen = &mut self.fast_in.allowed_in;
                if seen.len() >= MAX_ALLOWED_FAST_KEPT || seen.contains(&index) {
                    return Ok(None);
                }
                seen.push(index);
                Ok(Some(PeerEventKind::AllowedFast(index)))
            }
            // The caller passes only fast messages.
            _ => Ok(None),
        }
    }

    /// We choke the peer: its queued requests, the reads under way for it and the blocks not
    /// yet handed to the socket are given up, except those of allowed-fast pieces (a given-up
    /// read of one is queued again, first); a fast peer hears a reject for each.
    pub(super) fn give_up_requests(&mut self) -> Result<(), PeerError> {
        let allowed = if self.ctx.fast { self.ctx.allowed_fast.clone() } else { Vec::new() };
        let keep = |piece: u32| allowed.contains(&piece);
        let mut dropped = self.serve_queue.drain_unless(|b| keep(b.piece));
        // A choked peer's reads waiting for the upload limit would take the bytes the peers we
        // unchoke are waiting for.
        let (again, given_up) = self.reads.give_up(keep);
        self.serve_queue.requeue_front(again);
        dropped.extend(given_up);
        // A choked peer that stopped reading must not keep its share of the session's send
        // budget from the peers we serve next.
        dropped.extend(self.out.drop_blocks(keep));
        for b in dropped {
            self.reject(b)?;
        }
        Ok(())
    }
}
