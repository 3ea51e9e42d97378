//! Both directions of the BEP 3 handshake over any byte stream.
//!
//! Outbound: send ours, read theirs, check the info-hash. Inbound: read theirs first (the
//! session routes the connection by the info-hash in it), then answer. Either way the
//! `Framed` is switched to the message codec without losing bytes the peer sent behind
//! its handshake.
use super::PeerError;
use crate::metainfo::InfoHash;
use crate::wire::{Handshake, HandshakeCodec, MessageCodec, PeerId};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

pub type MessageStream<S> = Framed<S, MessageCodec>;

async fn read_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, HandshakeCodec>,
    timeout: Duration,
) -> Result<Handshake, PeerError> {
    match tokio::time::timeout(timeout, framed.next()).await {
        Err(_) => Err(PeerError::Timeout("handshake")),
        Ok(None) => Err(PeerError::Eof),
        Ok(Some(r)) => Ok(r?),
    }
}

/// Dials side: sends our handshake and checks theirs.
pub async fn outbound<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    ours: Handshake,
    timeout: Duration,
) -> Result<(MessageStream<S>, Handshake), PeerError> {
    let mut framed = Framed::new(stream, HandshakeCodec);
    tokio::time::timeout(timeout, framed.send(ours)).await.map_err(|_| PeerError::Timeout("handshake"))??;
    let theirs = read_handshake(&mut framed, timeout).await?;
    check(&theirs, ours.info_hash, ours.peer_id)?;
    Ok((framed.map_codec(|_| MessageCodec::default()), theirs))
}

/// Accepting side, first half: reads the peer's handshake so the session can route it.
pub async fn read_inbound<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    timeout: Duration,
) -> Result<(Framed<S, HandshakeCodec>, Handshake), PeerError> {
    let mut framed = Framed::new(stream, HandshakeCodec);
    let theirs = read_handshake(&mut framed, timeout).await?;
    Ok((framed, theirs))
}

/// Accepting side, second half: answers with our handshake.
pub async fn answer_inbound<S: AsyncRead + AsyncWrite + Unpin>(
    mut framed: Framed<S, HandshakeCodec>,
    theirs: &Handshake,
    ours: Handshake,
    timeout: Duration,
) -> Result<MessageStream<S>, PeerError> {
    if let Err(e) = check(theirs, ours.info_hash, ours.peer_id) {
        // Our own dial came back to us (an address of ours a tracker or PEX handed out):
        // answering lets the dialling side see its own peer id and stop dialling it.
        if matches!(e, PeerError::SelfConnection) {
            let _ = tokio::time::timeout(timeout, framed.send(ours)).await;
        }
        return Err(e);
    }
    tokio::time::timeout(timeout, framed.send(ours)).await.map_err(|_| PeerError::Timeout("handshake"))??;
    Ok(framed.map_codec(|_| MessageCodec::default()))
}

fn check(theirs: &Handshake, info_hash: InfoHash, our_id: PeerId) -> Result<(), PeerError> {
    if theirs.info_hash != info_hash {
        return Err(PeerError::WrongInfoHash);
    }
    if theirs.peer_id == our_id {
        return Err(PeerError::SelfConnection);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn both_sides_agree_and_keep_buffered_messages() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let ih = InfoHash([3; 20]);
        let (ida, idb) = (PeerId::generate(), PeerId::generate());
        let server = tokio::spawn(async move {
            let (framed, theirs) = read_inbound(b, T).await.unwrap();
            assert_eq!(theirs.peer_id, ida);
            let mut s = answer_inbound(framed, &theirs, Handshake::new(ih, idb), T).await.unwrap();
            s.send(Message::Unchoke).await.unwrap();
        });
        let (mut s, theirs) = outbound(a, Handshake::new(ih, ida), T).await.unwrap();
        assert_eq!(theirs.peer_id, idb);
        assert_eq!(s.next().await.unwrap().unwrap(), Message::Unchoke);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_info_hash_and_self_are_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let id = PeerId::generate();
        tokio::spawn(async move {
            let mut f = Framed::new(b, HandshakeCodec);
            f.send(Handshake::new(InfoHash([9; 20]), PeerId::generate())).await.unwrap();
            let _ = f.next().await;
        });
        assert!(matches!(outbound(a, Handshake::new(InfoHash([1; 20]), id), T).await, Err(PeerError::WrongInfoHash)));

        let (a, b) = tokio::io::duplex(1 << 16);
        let ih = InfoHash([1; 20]);
        tokio::spawn(async move {
            let mut f = Framed::new(b, HandshakeCodec);
            f.send(Handshake::new(ih, id)).await.unwrap();
            let _ = f.next().await;
        });
        assert!(matches!(outbound(a, Handshake::new(ih, id), T).await, Err(PeerError::SelfConnection)));
    }

    #[tokio::test]
    async fn a_dial_to_ourselves_is_seen_as_such_on_both_ends() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let ours = Handshake::new(InfoHash([1; 20]), PeerId::generate());
        let inbound = tokio::spawn(async move {
            let (framed, theirs) = read_inbound(b, T).await.unwrap();
            answer_inbound(framed, &theirs, ours, T).await.map(|_| ())
        });
        assert!(matches!(outbound(a, ours, T).await, Err(PeerError::SelfConnection)), "the dialling end");
        assert!(matches!(inbound.await.unwrap(), Err(PeerError::SelfConnection)), "the answering end");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out() {
        let (a, _b) = tokio::io::duplex(1 << 16);
        let r = outbound(a, Handshake::new(InfoHash([1; 20]), PeerId::generate()), T).await;
        assert!(matches!(r, Err(PeerError::Timeout(_))));
    }
}
