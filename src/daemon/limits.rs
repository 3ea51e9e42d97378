//! A torrent's own rate limits (`PATCH /api/torrents/{id}`): recorded, so they outlive a
//! restart, and applied to its running task at once. The global limits are config keys
//! (`download_rate_limit`, `upload_rate_limit`), applied by the config change itself.
use super::{parse_id, Daemon, DaemonError, TorrentView};
use serde::Deserialize;

/// The keys a torrent patch may set; a missing key keeps its value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentPatch {
    /// Bytes per second, 0 for no limit of its own.
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
}

impl Daemon {
    /// Applies `patch` to the torrent `id`: recorded first, then set on its task if it runs.
    pub async fn patch_torrent(&self, id: &str, patch: TorrentPatch) -> Result<TorrentView, DaemonError> {
        let key = parse_id(id)?;
        let mut torrents = self.torrents.lock().await;
        let entry = torrents.get_mut(&key).ok_or_else(|| DaemonError::NotFound(key.clone()))?;
        let record = &mut entry.record;
        record.download_limit = patch.download_limit.unwrap_or(record.download_limit);
        record.upload_limit = patch.upload_limit.unwrap_or(record.upload_limit);
        if let Some(handle) = &entry.handle {
            handle.rates().download.set(record.download_limit);
            handle.rates().upload.set(record.upload_limit);
        }
        tracing::info!(id = %key, download = record.download_limit, upload = record.upload_limit, "torrent limits set");
        let view = entry.view();
        self.save(&torrents).await?;
        Ok(view)
    }
}
