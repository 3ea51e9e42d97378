use super::*;
use futures::future::poll_fn;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::core::muxing::StreamMuxerExt;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// One end of an in-memory connection that keeps a copy of every byte written through it.
struct Tap {
    io: Compat<tokio::io::DuplexStream>,
    written: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tap {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

/// The body lengths of the data frames in a yamux byte stream (12-byte headers: version,
/// type, flags, stream id, length; only data frames, type 0, carry a body).
fn data_frames(mut wire: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    while wire.len() >= 12 {
        let length = u32::from_be_bytes(wire[8..12].try_into().unwrap()) as usize;
        let body = if wire[1] == 0 { length } else { 0 };
        if wire[1] == 0 && length > 0 {
            lengths.push(length);
        }
        wire = &wire[12 + body..];
    }
    assert!(wire.is_empty(), "the wire ends inside a frame header");
    lengths
}

/// Keeps a muxer's connection moving in the background.
fn drive<M: StreamMuxer + Send + Unpin + 'static>(mut muxer: M) {
    tokio::spawn(poll_fn(move |cx| muxer.poll_unpin(cx).map(|_| ())));
}

fn payload(seed: u8) -> Vec<u8> {
    (0..1024 * 1024).map(|i: usize| (i % 251) as u8 ^ seed).collect()
}

/// The dialler opens a stream and sends a megabyte, then closes; the listener reads it all,
/// answers with another megabyte and closes. Returns what each side read, and the bytes each
/// side wrote on the connection.
async fn exchange<D, L, DM, LM>(dialer: D, listener: L) -> ([Vec<u8>; 2], [Vec<u8>; 2])
where
    D: OutboundConnectionUpgrade<Tap, Output = DM, Info = &'static str>,
    L: InboundConnectionUpgrade<Tap, Output = LM, Info = &'static str>,
    D::Error: std::fmt::Debug,
    L::Error: std::fmt::Debug,
    DM: StreamMuxer + Send + Unpin + 'static,
    LM: StreamMuxer + Send + Unpin + 'static,
    DM::Substream: Unpin,
    LM::Substream: Send + Unpin + 'static,
    DM::Error: std::fmt::Debug,
    LM::Error: std::fmt::Debug,
{
    let (a, b) = tokio::io::duplex(64 * 1024);
    let wires = [Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new()))];
    let a = Tap { io: a.compat(), written: wires[0].clone() };
    let b = Tap { io: b.compat(), written: wires[1].clone() };
    let (dialer, listener) =
        futures::join!(dialer.upgrade_outbound(a, PROTOCOL), listener.upgrade_inbound(b, PROTOCOL));
    let (mut dialer, mut listener) = (dialer.unwrap(), listener.unwrap());

    let mut outbound = poll_fn(|cx| dialer.poll_outbound_unpin(cx)).await.unwrap();
    drive(dialer);
    let answer = payload(0x5a);
    let server = tokio::spawn(async move {
        let mut inbound = poll_fn(|cx| listener.poll_inbound_unpin(cx)).await.unwrap();
        drive(listener);
        let mut got = Vec::new();
        inbound.read_to_end(&mut got).await.unwrap();
        inbound.write_all(&answer).await.unwrap();
        inbound.close().await.unwrap();
        got
    });
    outbound.write_all(&payload(0)).await.unwrap();
    outbound.close().await.unwrap();
    let mut got = Vec::new();
    outbound.read_to_end(&mut got).await.unwrap();
    let listener_got = server.await.unwrap();
    let wire = |i: usize| wires[i].lock().unwrap().clone();
    ([got, listener_got], [wire(0), wire(1)])
}

/// Asserts the payload arrived whole and returns the largest data frame that carried it.
fn largest_frame(wire: &[u8]) -> usize {
    let frames = data_frames(wire);
    assert_eq!(frames.iter().sum::<usize>(), 1024 * 1024, "data frames: {frames:?}");
    frames.into_iter().max().unwrap()
}

/// Our muxer dials the stock `libp2p-yamux` one: a megabyte each way arrives intact, ours
/// sends it in frames larger than yamux's default 16 KiB and none over [`SPLIT_SEND_SIZE`].
#[tokio::test]
async fn our_large_frames_reach_a_stock_listener_and_its_small_ones_reach_us() {
    let ([got, listener_got], [ours, stock]) = exchange(Config::new(), libp2p::yamux::Config::default()).await;
    assert!(listener_got == payload(0), "the stock muxer read other bytes than ours wrote");
    assert!(got == payload(0x5a), "ours read other bytes than the stock muxer wrote");
    let largest = largest_frame(&ours);
    assert!(largest > 16 * 1024 && largest <= SPLIT_SEND_SIZE, "our largest data frame: {largest} B");
    assert_eq!(largest_frame(&stock), 16 * 1024, "the stock muxer's largest data frame");
}

/// The stock muxer dials ours: the same, the other way round.
#[tokio::test]
async fn a_stock_dialler_reaches_our_listener() {
    let ([got, listener_got], [stock, ours]) = exchange(libp2p::yamux::Config::default(), Config::new()).await;
    assert!(listener_got == payload(0), "ours read other bytes than the stock muxer wrote");
    assert!(got == payload(0x5a), "the stock muxer read other bytes than ours wrote");
    let largest = largest_frame(&ours);
    assert!(largest > 16 * 1024 && largest <= SPLIT_SEND_SIZE, "our largest data frame: {largest} B");
    assert_eq!(largest_frame(&stock), 16 * 1024, "the stock muxer's largest data frame");
}

/// Streams the stranger opens: more than the queue holds, fewer than yamux's 512 a side.
const OPENED: usize = 400;
/// Generous: a hang detector, not a timing assertion.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

type Answer = std::pin::Pin<Box<dyn Future<Output = (u16, io::Result<Vec<u8>>)> + Send>>;

/// Opens `OPENED` streams on `remote`, each carrying its number and closed for writing at once,
/// and returns the reads of what comes back on each. A stream closed for writing is not one
/// yamux waits to have acknowledged, so the ACK backlog never stops the opener.
async fn open_half_closed<C>(remote: &mut yamux::Connection<C>) -> futures::stream::FuturesUnordered<Answer>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let answers = futures::stream::FuturesUnordered::new();
    for n in 0..OPENED as u16 {
        let mut stream = poll_fn(|cx| remote.poll_new_outbound(cx)).await.unwrap();
        stream.write_all(&n.to_be_bytes()).await.unwrap();
        stream.close().await.unwrap();
        answers.push(Box::pin(async move {
            let mut got = Vec::new();
            let read = stream.read_to_end(&mut got).await;
            (n, read.map(|_| got))
        }) as Answer);
    }
    answers
}

/// Drives `remote` in the background, echoing every stream opened to it.
fn echo_inbound<C: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut remote: yamux::Connection<C>) {
    tokio::spawn(async move {
        while let Some(Ok(mut stream)) = poll_fn(|cx| remote.poll_next_inbound(cx)).await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                stream.read_to_end(&mut got).await.unwrap();
                stream.write_all(&got).await.unwrap();
                stream.close().await.unwrap();
            });
        }
    });
}

/// Drives `muxer` without taking any stream until `done` finishes, checking after every step
/// that no more than `MAX_WAITING_INBOUND` inbound streams wait.
async fn drive_until<C: AsyncRead + AsyncWrite + Unpin, T>(muxer: &mut Muxer<C>, done: impl Future<Output = T>) -> T {
    let mut done = std::pin::pin!(done);
    let driven = poll_fn(|cx| {
        if muxer.poll_unpin(cx).is_ready() {
            panic!("our end of the connection failed");
        }
        let waiting = muxer.inbound.len();
        assert!(waiting <= MAX_WAITING_INBOUND, "{waiting} inbound streams wait for the swarm");
        done.as_mut().poll(cx)
    });
    tokio::time::timeout(WAIT, driven).await.expect("the stranger's streams were seen to")
}

/// A stranger opens 400 streams (each closed for writing at once, so yamux's ACK backlog does
/// not stop it) while the swarm takes none: at most 32 wait for the swarm, the others are
/// closed at once with nothing read from them, and the connection still carries a new stream
/// both ways. Without the bound a peer could hold up to yamux's 512 streams per connection
/// (each with its receive buffer) waiting on a swarm that is not taking them.
#[tokio::test]
async fn inbound_streams_past_the_queue_are_dropped_and_the_connection_goes_on() {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let mut ours = Config::new().upgrade_inbound(ours.compat(), PROTOCOL).await.unwrap();
    let mut remote = yamux::Connection::new(theirs.compat(), yamux::Config::default(), yamux::Mode::Client);
    let mut answers = open_half_closed(&mut remote).await;
    echo_inbound(remote);

    // Every stream past the queue is closed by us, unanswered.
    let closed = drive_until(&mut ours, async {
        let mut closed = Vec::new();
        while closed.len() < OPENED - MAX_WAITING_INBOUND {
            let (n, got) = answers.next().await.unwrap();
            assert!(got.unwrap().is_empty(), "stream {n} got an answer before the swarm took it");
            closed.push(n);
        }
        closed
    })
    .await;

    // The swarm takes the ones that waited; each still carries its number and our answer.
    let mut handed = Vec::new();
    while let Some(stream) = poll_fn(|cx| ours.poll_inbound_unpin(cx)).now_or_never() {
        handed.push(stream.unwrap());
    }
    assert_eq!(handed.len(), MAX_WAITING_INBOUND, "streams handed over");
    let mut fresh = poll_fn(|cx| ours.poll_outbound_unpin(cx)).await.unwrap();
    drive(ours);
    for mut stream in handed {
        tokio::spawn(async move {
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            stream.write_all(&got).await.unwrap();
            stream.close().await.unwrap();
        });
    }
    let answered = tokio::time::timeout(WAIT, answers.collect::<Vec<_>>()).await.expect("every answer");
    let mut seen = closed;
    for (n, got) in answered {
        assert_eq!(got.unwrap(), n.to_be_bytes(), "the answer on stream {n}");
        seen.push(n);
    }
    seen.sort();
    assert_eq!(seen, (0..OPENED as u16).collect::<Vec<_>>(), "every stream either waited or was closed");

    // A new stream after all that carries data both ways.
    fresh.write_all(b"still here").await.unwrap();
    fresh.close().await.unwrap();
    let mut echo = Vec::new();
    tokio::time::timeout(WAIT, fresh.read_to_end(&mut echo)).await.expect("the echo").unwrap();
    assert_eq!(echo, b"still here");
}

/// A yamux frame header: version 0, type, flags, stream id, length (big-endian).
fn header(kind: u8, flags: u16, stream: u32, length: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[1] = kind;
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    h[4..8].copy_from_slice(&stream.to_be_bytes());
    h[8..12].copy_from_slice(&length.to_be_bytes());
    h
}

const DATA: u8 = 0;
const WINDOW_UPDATE: u8 = 1;
const PING: u8 = 2;
const SYN: u16 = 1;
const ACK: u16 = 2;

/// A stranger written by hand, frame by frame: it opens one stream, answers our first ping
/// half a second late (so we take the round trip to be that long, and every window update to
/// come quickly), and sends 48 MiB as fast as our windows allow while we read it all at once.
/// The window updates we send show how far the stream's window grew: past 256 KiB (so the
/// stranger can make it grow), and never past 256 KiB + [`WINDOW_GROWTH`]. With yamux's
/// default bound one update on this data was 24 MiB, and the window goes on doubling up to
/// nearly 1 GiB (6 MiB with ours).
#[tokio::test]
async fn a_stranger_answering_pings_late_grows_a_window_only_to_the_bound() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const SENT: usize = 48 << 20;
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let reader = tokio::spawn(async move {
        let mut ours = Config::new().upgrade_inbound(ours.compat(), PROTOCOL).await.unwrap();
        let mut stream = poll_fn(|cx| ours.poll_inbound_unpin(cx)).await.unwrap();
        drive(ours);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        got.len()
    });
    let (mut from_us, to_us) = tokio::io::split(theirs);
    let to_us = Arc::new(tokio::sync::Mutex::new(to_us));
    let credit = Arc::new(tokio::sync::watch::channel(START_WINDOW as u64).0);
    let (ponged, mut rtt_known) = tokio::sync::watch::channel(false);
    let largest_update = Arc::new(Mutex::new(0u32));
    let listen = {
        let (to_us, credit, largest_update) = (to_us.clone(), credit.clone(), largest_update.clone());
        tokio::spawn(async move {
            let mut h = [0u8; 12];
            while from_us.read_exact(&mut h).await.is_ok() {
                let (flags, length) =
                    (u16::from_be_bytes([h[2], h[3]]), u32::from_be_bytes(h[8..12].try_into().unwrap()));
                match h[1] {
                    DATA => {
                        let mut body = vec![0u8; length as usize];
                        from_us.read_exact(&mut body).await.unwrap();
                    }
                    WINDOW_UPDATE if u32::from_be_bytes(h[4..8].try_into().unwrap()) == 1 => {
                        let mut largest = largest_update.lock().unwrap();
                        *largest = (*largest).max(length);
                        credit.send_modify(|c| *c += u64::from(length));
                    }
                    PING if flags & SYN != 0 && !*ponged.borrow() => {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        to_us.lock().await.write_all(&header(PING, ACK, 0, length)).await.unwrap();
                        ponged.send_replace(true);
                    }
                    _ => {}
                }
            }
        })
    };
    to_us.lock().await.write_all(&header(DATA, SYN, 1, 0)).await.unwrap();
    tokio::time::timeout(WAIT, rtt_known.wait_for(|known| *known)).await.expect("our ping").unwrap();
    let chunk = vec![0x5au8; SPLIT_SEND_SIZE];
    let (mut sent, mut spent) = (0usize, 0u64);
    let mut credit_seen = credit.subscribe();
    while sent < SENT {
        let have = *tokio::time::timeout(WAIT, credit_seen.wait_for(|c| *c > spent)).await.expect("credit").unwrap();
        let n = (have - spent).min(chunk.len() as u64).min((SENT - sent) as u64) as usize;
        let mut to_us = to_us.lock().await;
        to_us.write_all(&header(DATA, 0, 1, n as u32)).await.unwrap();
        to_us.write_all(&chunk[..n]).await.unwrap();
        (sent, spent) = (sent + n, spent + n as u64);
    }
    to_us.lock().await.write_all(&header(WINDOW_UPDATE, 4, 1, 0)).await.unwrap(); // FIN
    let read = tokio::time::timeout(WAIT, reader).await.expect("our reader ends").unwrap();
    assert_eq!(read, SENT, "every byte sent was read");
    listen.abort();
    let largest = *largest_update.lock().unwrap() as usize;
    assert!(largest > START_WINDOW, "the window never grew ({largest} B): the test shows nothing");
    assert!(largest <= START_WINDOW + WINDOW_GROWTH, "a window update of {largest} B");
}
