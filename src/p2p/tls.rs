//! The libp2p TLS 1.3 handshake (`/tls/1.0.0`, the libp2p TLS spec) with the cipher suite
//! chosen for speed: AES-GCM first where the CPU has AES instructions, ChaCha20-Poly1305
//! first where it has not.
//!
//! `libp2p-tls` fixes ChaCha20-Poly1305 first in its list, and Noise knows only ChaCha20. On a
//! CPU with AES-NI that costs a bulk transfer a fifth of its throughput (`shoal bench
//! --transport libp2p`: 400–420 MiB/s with either, 495 with AES-128-GCM). Everything else
//! is the spec, and the certificate work is `libp2p-tls`'s own: [`certificate::generate`]
//! makes our self-signed certificate carrying the host key's signature, [`certificate::parse`]
//! checks a peer's (validity, self-signature, the host key's signature over its key).
//!
//! Who picks the suite: in TLS 1.3 the server does. Our server prefers its own order (so a
//! stock `libp2p-tls` dialler, ChaCha20 first, still gets AES); our client lists AES first,
//! which a stock server (following the client's order, rustls' default) takes.
//!
//! The handshake is rustls' (driven on its unbuffered API by `handshake`); the records after
//! it are ours (`stream`): decrypted in place and copied once, where rustls' own connection
//! copies each twice more and needs buffers around the socket to batch its system calls.
//!
//! What a stranger can send is bounded by rustls during the handshake (TLS 1.3 only, exactly
//! one certificate, no session resumption, messages within a fixed buffer) and by `stream`
//! after it; a certificate without the libp2p extension or with a bad signature fails the
//! handshake, and the swarm then checks the PeerId it meant to reach.
use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::{Keypair, PeerId};
use libp2p::tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

mod handshake;
mod stream;
pub use stream::TlsStream;
/// For the `tls_records` fuzz target, which builds a stream from secrets of its own.
#[doc(hidden)]
pub use stream::{Handover, Rekey, KEY_UPDATES_IN_A_ROW, RECEIVE_BUFFER};

/// The protocol name multistream-select negotiates.
pub const PROTOCOL: &str = "/tls/1.0.0";
/// ALPN both sides must announce (libp2p TLS spec).
const ALPN: &[u8] = b"libp2p";

/// The security upgrade: TLS 1.3 with libp2p's certificates, fastest suite first.
#[derive(Clone)]
pub struct Config {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Setup(String),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("peer certificate: {0}")]
    Certificate(#[from] certificate::ParseError),
    #[error("the handshake ended without exactly one peer certificate")]
    NoCertificate,
}

impl Config {
    pub fn new(keypair: &Keypair) -> Result<Config, TlsError> {
        let (cert, key) = certificate::generate(keypair).map_err(setup)?;
        let provider = provider();
        // Not `with_single_cert`: rustls would reject our own certificate for its critical
        // libp2p extension. Ours is sent whatever the other side hints.
        let signing = provider.key_provider.load_private_key(key).map_err(setup)?;
        let ours = Arc::new(SingleCertAndKey::from(CertifiedKey::new(vec![cert], signing)));
        let versions = &[&rustls::version::TLS13];

        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(setup)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Libp2pVerifier))
            .with_client_cert_resolver(ours.clone());
        client.alpn_protocols = vec![ALPN.to_vec()];
        // Every server is named 0.0.0.0 (no SNI), so a cached session would be offered to
        // whichever peer we dial next: no resumption, either side.
        client.resumption = rustls::client::Resumption::disabled();
        // The record layer is ours (module `stream`): rustls hands the traffic secrets over.
        client.enable_secret_extraction = true;

        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(setup)?
            .with_client_cert_verifier(Arc::new(Libp2pVerifier))
            .with_cert_resolver(ours);
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.ignore_client_order = true;
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.enable_secret_extraction = true;

        Ok(Config { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// rustls' ring provider with the TLS 1.3 suites in the order that is fastest on this CPU.
fn provider() -> Arc<CryptoProvider> {
    use ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256};
    let mut provider = ring::default_provider();
    provider.cipher_suites = if hardware_aes() {
        vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256]
    } else {
        vec![TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384]
    };
    Arc::new(provider)
}

/// Whether AES-GCM runs in hardware here (without it, ChaCha20 is the faster cipher).
fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull");
    #[allow(unreachable_code)]
    false
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, TlsError>>;

    fn upgrade_inbound(self, socket: C, _: &'static str) -> Self::Future {
        async move {
            let conn = rustls::server::UnbufferedServerConnection::new(self.server).map_err(setup)?;
            handshake::run(conn, socket).await
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = TlsError;
    type Future = BoxFuture<'static, Result<Self::Output, TlsError>>;

    fn upgrade_outbound(self, socket: C, _: &'static str) -> Self::Future {
        async move {
            // The spec: no Server Name Indication; an unspecified IP address sends none.
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
            let conn = rustls::client::UnbufferedClientConnection::new(self.client, name).map_err(setup)?;
            handshake::run(conn, socket).await
        }
        .boxed()
    }
}

fn setup(e: impl std::fmt::Display) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// The PeerId of the certificate the (finished, hence verified) handshake received.
fn peer_id(state: &rustls::CommonState) -> Result<PeerId, TlsError> {
    match state.peer_certificates() {
        Some([cert]) => Ok(certificate::parse(cert)?.peer_id()),
        // The verifier below accepts exactly one certificate and client auth is mandatory.
        _ => Err(TlsError::NoCertificate),
    }
}

/// The libp2p rules for a peer's certificate, both ways: exactly one, self-signed, carrying
/// the libp2p extension whose signature by the host key checks out; handshake signatures
/// by the certificate's key. Which PeerId was meant is checked by the swarm after the upgrade.
#[derive(Debug)]
struct Libp2pVerifier;

impl Libp2pVerifier {
    fn check(end_entity: &CertificateDer, intermediates: &[CertificateDer]) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General("libp2p TLS takes exactly one certificate".into()));
        }
        certificate::parse(end_entity).map_err(invalid)?;
        Ok(())
    }

    fn tls13_signature(
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let cert = certificate::parse(cert).map_err(invalid)?;
        cert.verify_signature(dss.scheme, message, dss.signature()).map_err(invalid)?;
        Ok(HandshakeSignatureValid::assertion())
    }

    /// The schemes `P2pCertificate::verify_signature` checks with ring, elliptic curves first
    /// (the spec: RSA only when nothing else is supported).
    fn schemes() -> Vec<SignatureScheme> {
        use SignatureScheme::*;
        vec![
            ECDSA_NISTP384_SHA384,
            ECDSA_NISTP256_SHA256,
            ED25519,
            RSA_PSS_SHA512,
            RSA_PSS_SHA384,
            RSA_PSS_SHA256,
            RSA_PKCS1_SHA512,
            RSA_PKCS1_SHA384,
            RSA_PKCS1_SHA256,
        ]
    }
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// TLS 1.2 is never offered nor accepted (both configs are TLS 1.3 only).
fn no_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General("libp2p TLS is TLS 1.3 only".into()))
}

/// The methods both verifier traits ask for, the same either way: TLS 1.2 refused, TLS 1.3
/// handshake signatures checked against the certificate's key, the schemes that check supports.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            no_tls12()
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Self::tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            Self::schemes()
        }
    };
}

impl ServerCertVerifier for Libp2pVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: &ServerName,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

impl ClientCertVerifier for Libp2pVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

#[cfg(test)]
mod tests;
