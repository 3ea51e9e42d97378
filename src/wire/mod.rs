//! The BitTorrent peer wire protocol (BEP 3) as tokio-util codecs.
//!
//! Parts, in reading order:
//! - [`handshake`]: the fixed 68-byte handshake and its codec.
//! - [`message`]: the length-prefixed messages and their codec.
//! - [`extension`]: the BEP 10 extension handshake carried inside `Message::Extended`.
//! - [`metadata`]: BEP 9 `ut_metadata` messages (the info dict in 16 KiB pieces).
//! - [`fast`]: the BEP 6 fast extension's allowed-fast set and bounds.
//! - [`pex`]: the BEP 11 peer exchange message (`ut_pex`).
//!
//! A connection starts framed with [`HandshakeCodec`]; after the handshake the same
//! `Framed` is switched to [`MessageCodec`] with `Framed::map_codec`, which keeps any bytes
//! the peer already sent behind its handshake.
pub mod extension;
pub mod fast;
pub mod handshake;
pub mod message;
pub mod metadata;
pub mod pex;

pub use handshake::{Handshake, HandshakeCodec, PeerId};
pub use message::{Message, MessageCodec, WireError};
