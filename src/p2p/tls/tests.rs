use super::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use rustls::{CipherSuite, ProtocolVersion};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

type Pipe = Compat<tokio::io::DuplexStream>;

fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    (a.compat(), b.compat())
}

/// The suite the handshake should settle on when shoal takes part, on this CPU.
fn expected_suite() -> CipherSuite {
    if hardware_aes() {
        CipherSuite::TLS13_AES_128_GCM_SHA256
    } else {
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
    }
}

/// The suite and version a connection settled on, ours or a stock libp2p-tls one.
trait Negotiated {
    fn negotiated(&self) -> (CipherSuite, Option<ProtocolVersion>);
}

impl<S> Negotiated for TlsStream<S> {
    fn negotiated(&self) -> (CipherSuite, Option<ProtocolVersion>) {
        // The handshake refuses anything but TLS 1.3.
        (self.cipher_suite(), Some(ProtocolVersion::TLSv1_3))
    }
}

impl<S> Negotiated for libp2p::tls::TlsStream<S> {
    fn negotiated(&self) -> (CipherSuite, Option<ProtocolVersion>) {
        let state = self.get_ref().1;
        (state.negotiated_cipher_suite().expect("handshake done").suite(), state.protocol_version())
    }
}

/// Dials with `client` over a pipe to `server` accepting, sends a line each way, and returns
/// the PeerId each side learnt and the suite each side uses.
async fn handshake<A, B, SA, SB>(client: A, server: B) -> ((PeerId, CipherSuite), (PeerId, CipherSuite))
where
    A: OutboundConnectionUpgrade<Pipe, Info = &'static str, Output = (PeerId, SA)>,
    B: InboundConnectionUpgrade<Pipe, Info = &'static str, Output = (PeerId, SB)>,
    SA: AsyncRead + AsyncWrite + Unpin + Negotiated,
    SB: AsyncRead + AsyncWrite + Unpin + Negotiated,
    A::Error: std::fmt::Debug,
    B::Error: std::fmt::Debug,
{
    let (a, b) = pipe();
    let (dialled, accepted) = tokio::join!(client.upgrade_outbound(a, PROTOCOL), server.upgrade_inbound(b, PROTOCOL));
    let ((server_id, mut to_server), (client_id, mut to_client)) = (dialled.unwrap(), accepted.unwrap());
    let client_suite = to_server.negotiated();
    let server_suite = to_client.negotiated();
    assert_eq!(client_suite.1, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(client_suite.0, server_suite.0);

    let mut got = [0u8; 5];
    let ping = async {
        to_server.write_all(b"hello").await.unwrap();
        to_server.flush().await.unwrap();
    };
    let (_, read) = tokio::join!(ping, to_client.read_exact(&mut got));
    read.unwrap();
    assert_eq!(&got, b"hello");
    ((server_id, client_suite.0), (client_id, server_suite.0))
}

#[tokio::test]
async fn shoal_to_shoal_uses_the_fast_suite_and_each_side_learns_the_others_peer_id() {
    let (alice, bob) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let ((server, suite), (client, _)) = handshake(Config::new(&alice).unwrap(), Config::new(&bob).unwrap()).await;
    assert_eq!(server, bob.public().to_peer_id());
    assert_eq!(client, alice.public().to_peer_id());
    assert_eq!(suite, expected_suite());
}

#[tokio::test]
async fn a_stock_libp2p_tls_dialler_is_served_the_fast_suite() {
    // libp2p-tls lists ChaCha20 first; our server picks by its own order.
    let (alice, bob) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let stock = libp2p::tls::Config::new(&alice).unwrap();
    let ((server, suite), (client, _)) = handshake(stock, Config::new(&bob).unwrap()).await;
    assert_eq!(server, bob.public().to_peer_id());
    assert_eq!(client, alice.public().to_peer_id());
    assert_eq!(suite, expected_suite());
}

#[tokio::test]
async fn dialling_a_stock_libp2p_tls_server_gets_the_fast_suite() {
    let (alice, bob) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let stock = libp2p::tls::Config::new(&bob).unwrap();
    let ((server, suite), (client, _)) = handshake(Config::new(&alice).unwrap(), stock).await;
    assert_eq!(server, bob.public().to_peer_id());
    assert_eq!(client, alice.public().to_peer_id());
    assert_eq!(suite, expected_suite());
}

/// A TLS 1.3 peer whose certificate is an ordinary self-signed one, without the libp2p
/// extension (so it proves no host key).
fn plain_certificate() -> (CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    (cert.cert.der().clone(), key.into())
}

#[tokio::test]
async fn a_server_without_a_libp2p_certificate_fails_our_handshake() {
    let (cert, key) = plain_certificate();
    let mut plain = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    plain.alpn_protocols = vec![ALPN.to_vec()];
    let (a, b) = pipe();
    let ours = Config::new(&Keypair::generate_ed25519()).unwrap();
    let accept = futures_rustls::TlsAcceptor::from(Arc::new(plain)).accept(b);
    let (dialled, _) = tokio::join!(ours.upgrade_outbound(a, PROTOCOL), accept);
    let Err(err) = dialled else { panic!("a certificate without the libp2p extension must fail") };
    assert!(matches!(err, TlsError::Handshake(_)), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn a_client_without_a_libp2p_certificate_is_refused() {
    #[derive(Debug)]
    struct AnyServer;
    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer,
            _: &[CertificateDer],
            _: &ServerName,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
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
            _: &[u8],
            _: &CertificateDer,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            Libp2pVerifier::schemes()
        }
    }
    let (cert, key) = plain_certificate();
    let mut plain = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(vec![cert], key)
        .unwrap();
    plain.alpn_protocols = vec![ALPN.to_vec()];
    let (a, b) = pipe();
    let ours = Config::new(&Keypair::generate_ed25519()).unwrap();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
    let dial = async move {
        // The client finishes its flight before the server's verdict reaches it; a read
        // then sees the server's alert or the closed pipe.
        let mut stream = futures_rustls::TlsConnector::from(Arc::new(plain)).connect(name, a).await?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await
    };
    let (dialled, accepted) = tokio::join!(dial, ours.upgrade_inbound(b, PROTOCOL));
    let Err(err) = accepted else { panic!("a client certificate without the libp2p extension must be refused") };
    assert!(matches!(err, TlsError::Handshake(_)), "{err}");
    assert!(dialled.is_err());
}
