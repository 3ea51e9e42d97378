//! The torrent's fast-resume record kept current ([`crate::storage::resume`]): one writer task
//! per torrent takes the newest "pieces had" the event loop noted and records it, at most once
//! per [`RECORD_EVERY`], and once more when the torrent stops. One writer, so an older record
//! never lands after a newer one; the event loop only swaps a value and never waits on disk.
use crate::storage::Storage;
use bitvec::prelude::*;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The least time between two records while pieces keep arriving.
const RECORD_EVERY: Duration = Duration::from_secs(2);

/// The event loop's side: where it notes what it has.
pub(super) struct Recorder {
    have: watch::Sender<BitVec<u8, Msb0>>,
}

impl Recorder {
    /// Starts the writer for the record at `path`, holding `have` (recorded at once).
    pub(super) fn spawn(
        storage: Storage,
        path: PathBuf,
        have: &BitVec<u8, Msb0>,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> Recorder {
        let (tx, rx) = watch::channel(have.clone());
        tasks.spawn(write_records(storage, path, rx, cancel));
        Recorder { have: tx }
    }

    /// Notes the pieces had now; every one of them must be verified and written already.
    pub(super) fn note(&self, have: &BitVec<u8, Msb0>) {
        self.have.send_if_modified(|h| {
            let changed = h != have;
            if changed {
                h.clone_from(have);
            }
            changed
        });
    }
}

async fn write_records(
    storage: Storage,
    path: PathBuf,
    mut rx: watch::Receiver<BitVec<u8, Msb0>>,
    cancel: CancellationToken,
) {
    rx.mark_changed();
    loop {
        let have = rx.borrow_and_update().clone();
        if let Err(e) = storage.save_resume(path.clone(), have).await {
            tracing::warn!(path = %path.display(), "resume record not written: {e}");
        }
        let stopped = tokio::select! {
            _ = cancel.cancelled() => true,
            r = rx.changed() => r.is_err(),
        };
        if !stopped {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(RECORD_EVERY) => continue,
            }
        }
        // Stopping: the last note, if it is newer than what was recorded.
        if rx.has_changed().unwrap_or(false) {
            let have = rx.borrow_and_update().clone();
            if let Err(e) = storage.save_resume(path.clone(), have).await {
                tracing::warn!(path = %path.display(), "resume record not written: {e}");
            }
        }
        return;
    }
}
