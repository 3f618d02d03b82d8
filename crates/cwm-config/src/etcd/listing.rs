//! Listing a prefix page by page, every page pinned to one revision.

use std::time::Duration;

use etcd_client::Client;

use super::client::Failure;
use super::io::{Kv, KvReader, RangeError, RangeRead};
use super::settings::EtcdSettings;
use crate::error::ConfigError;

/// Target size of one page (keys and values): the next page asks for as many keys as fit, by the
/// average size of the last page. Far below the 64 MiB message limit.
pub(crate) const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// How many times a listing restarts when its revision is compacted between two pages.
const LIST_ATTEMPTS: usize = 3;

/// Read every key under `prefix` at one revision, in pages of at most `page_size` keys and about
/// 16 MiB of keys and values (gRPC messages are allowed up to 64 MiB; one range over everything
/// could exceed that and would be held whole in memory). Every page after the first is pinned to
/// the first page's revision, which is returned: watching from `revision + 1` misses nothing.
/// Keys come back sorted. Each page is bounded by 10 s. For one namespace, pass
/// [`crate::keys::namespace_webhooks_prefix`].
///
/// If the revision is compacted between two pages, the listing starts over (up to 3 times); a
/// page too large for one gRPC message is retried with half as many keys.
pub async fn read_all(
    client: &mut Client,
    prefix: &str,
    page_size: i64,
) -> Result<(i64, Vec<(Vec<u8>, Vec<u8>)>), ConfigError> {
    let mut listing = Listing::new(
        KvReader::new(client),
        prefix.as_bytes(),
        page_size,
        EtcdSettings::default().request_timeout,
    );
    let mut out = Vec::new();
    while let Some(page) = listing
        .next()
        .await
        .map_err(|f| ConfigError::Etcd(f.message))?
    {
        if page.restarted {
            out.clear();
        }
        out.extend(page.kvs.into_iter().map(|kv| (kv.key, kv.value)));
    }
    Ok((listing.revision(), out))
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end for a
/// prefix); `\0` means "to the end of the keyspace".
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Keys to ask for after a page of `keys` keys and `bytes` bytes asked with `limit`: about
/// [`PAGE_BYTES`] of keys and values, at most `page_size` keys. Large values make smaller pages (bounded memory, far from
/// the message limit); a page shrunk by large values grows back when values get smaller.
pub(crate) fn next_limit(keys: usize, bytes: usize, limit: i64, page_size: i64) -> i64 {
    if keys < 2 || bytes == 0 {
        return limit;
    }
    let per_key = bytes.div_ceil(keys);
    i64::try_from(PAGE_BYTES / per_key)
        .unwrap_or(i64::MAX)
        .clamp(1, page_size)
}

/// One page of a listing, keys in order.
pub(crate) struct Page {
    pub(crate) kvs: Vec<Kv>,
    /// The listing started over (its revision was compacted between two pages): what earlier
    /// pages gave is void.
    pub(crate) restarted: bool,
    /// Keys in the whole range at the listing's revision, as etcd counted them for this page.
    pub(crate) count: i64,
    /// The listing's revision.
    pub(crate) revision: i64,
}

/// A listing of every key under a prefix, page by page, every page pinned to the revision of
/// the first one. The next request is sent only when [`Listing::next`] is called again, so the
/// caller can work on one page while the next one is on its way.
///
/// If the revision is compacted between two pages, the listing starts over (up to 3 times); a
/// page too large for one gRPC message is asked again with half as many keys. Each request is
/// bounded by `request_timeout`.
pub(crate) struct Listing<R> {
    reader: R,
    end: Vec<u8>,
    prefix: Vec<u8>,
    /// First key of the next page.
    start: Vec<u8>,
    page_size: i64,
    limit: i64,
    /// Revision of the first page; 0 before it.
    revision: i64,
    attempts: usize,
    done: bool,
    request_timeout: Duration,
}

impl<R: RangeRead> Listing<R> {
    pub(crate) fn new(reader: R, prefix: &[u8], page_size: i64, request_timeout: Duration) -> Self {
        let page_size = page_size.max(1);
        Self {
            reader,
            end: prefix_end(prefix),
            prefix: prefix.to_vec(),
            start: prefix.to_vec(),
            page_size,
            limit: page_size,
            revision: 0,
            attempts: 1,
            done: false,
            request_timeout,
        }
    }

    /// The revision every page is pinned to (0 before the first page).
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// The next page, or `None` once the listing is complete.
    pub(crate) async fn next(&mut self) -> Result<Option<Page>, Failure> {
        if self.done {
            return Ok(None);
        }
        let mut restarted = false;
        loop {
            let timeout = self.request_timeout;
            let request = self
                .reader
                .range(&self.start, &self.end, self.limit, self.revision);
            let resp = match tokio::time::timeout(timeout, request).await {
                Err(_) => {
                    return Err(Failure::other(format!(
                        "range request timed out after {timeout:?}"
                    )));
                }
                Ok(Err(RangeError::Compacted(_))) if self.revision != 0 => {
                    if self.attempts >= LIST_ATTEMPTS {
                        return Err(Failure::other(
                            "the listing revision was compacted repeatedly; etcd compacts too \
                             aggressively",
                        ));
                    }
                    tracing::info!(
                        revision = self.revision,
                        "listing revision compacted between pages; listing again"
                    );
                    self.attempts += 1;
                    self.revision = 0;
                    self.start = self.prefix.clone();
                    self.limit = self.page_size;
                    restarted = true;
                    continue;
                }
                Ok(Err(RangeError::TooLarge(_))) if self.limit > 1 => {
                    self.limit = (self.limit / 2).max(1);
                    tracing::debug!(
                        limit = self.limit,
                        "range page too large; halving the page size"
                    );
                    continue;
                }
                Ok(Err(e)) => return Err(e.into_failure()),
                Ok(Ok(resp)) => resp,
            };
            if self.revision == 0 {
                self.revision = resp
                    .header_revision
                    .filter(|r| *r > 0)
                    .ok_or_else(|| Failure::other("range response without a revision"))?;
            }
            let more = resp.more;
            let count = resp.count;
            let kvs = resp.kvs;
            let bytes = kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
            self.limit = next_limit(kvs.len(), bytes, self.limit, self.page_size);
            match kvs.last() {
                Some(last) if more => {
                    self.start.clear();
                    self.start.extend_from_slice(&last.key);
                    self.start.push(0);
                }
                _ => self.done = true,
            }
            return Ok(Some(Page {
                kvs,
                restarted,
                count,
                revision: self.revision,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/cwm/"), b"/cwm0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn pages_follow_value_sizes() {
        // ~260-byte entries: the key limit applies.
        assert_eq!(next_limit(100, 26_000, 50_000, 50_000), 50_000);
        // 64 KiB entries: about 16 MiB per page.
        assert_eq!(next_limit(10, 655_360, 50_000, 50_000), 256);
        // Back to small values: grows to the key limit again.
        assert_eq!(next_limit(10, 1_000, 256, 50_000), 50_000);
        // Never below one key; a page too small to judge keeps the limit.
        assert_eq!(next_limit(2, 80 << 20, 10, 50_000), 1);
        assert_eq!(next_limit(1, 10, 7, 50_000), 7);
    }
}
