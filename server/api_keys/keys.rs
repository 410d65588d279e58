//! The API key file: parsing, constant-time lookup, and reloading when the
//! file changes.
//!
//! A key file holds one key per line; blank lines and lines starting with
//! `#` are skipped, and surrounding whitespace is trimmed. Keys are visible
//! ASCII (what an HTTP header value may carry without quoting), at most
//! [`MAX_KEY_LEN`] bytes. Nothing here ever puts a key into an error, a
//! log line or a `Debug` string: errors name the file and the line number.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use subtle::{Choice, ConstantTimeEq};

/// The longest key accepted, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 256;

/// The largest key file read: far more than any real list of keys, small
/// enough that a wrong path (a log, a model) is refused cheaply.
const MAX_FILE_LEN: u64 = 1024 * 1024;

/// How often the key file is read again to see whether it changed.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read the API key file '{}': {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is over 1 MiB.
    #[error("the API key file '{}' is larger than 1 MiB", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line is not a usable key (the key itself is never shown).
    #[error("the API key file '{}', line {line}: {reason}", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Only blank lines and comments: accepting it would lock every
    /// protected group, and a half-written file looks just like this.
    #[error("the API key file '{}' holds no key (only blank lines and comments)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// One key, zero-padded to a fixed length so that comparing it takes the
/// same time whatever its length and wherever it differs. Held as words:
/// comparing 32 words costs a few nanoseconds, where comparing 256 bytes
/// one by one through `subtle`'s optimisation barriers costs microseconds.
#[derive(Clone)]
struct Padded {
    words: [u64; MAX_KEY_LEN / 8],
    len: u64,
}

impl Padded {
    /// `None` for a key longer than [`MAX_KEY_LEN`].
    fn new(key: &[u8]) -> Option<Padded> {
        if key.len() > MAX_KEY_LEN {
            return None;
        }
        let mut words = [0u64; MAX_KEY_LEN / 8];
        for (i, &byte) in key.iter().enumerate() {
            // i < MAX_KEY_LEN, so i / 8 is in range.
            words[i / 8] |= u64::from(byte) << (8 * (i % 8));
        }
        Some(Padded {
            words,
            len: key.len() as u64,
        })
    }

    /// Every word is looked at, with no branch on the data; only the final
    /// zero test goes through `subtle`.
    fn ct_eq(&self, other: &Padded) -> Choice {
        let diff = self
            .words
            .iter()
            .zip(&other.words)
            .fold(self.len ^ other.len, |diff, (a, b)| diff | (a ^ b));
        diff.ct_eq(&0)
    }
}

/// A set of API keys, as parsed from a key file.
#[derive(Clone)]
pub struct Keys(Vec<Padded>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys)", self.0.len())
    }
}

impl Keys {
    /// Parses a key file's text; errors carry the line number and what is
    /// wrong, never the line.
    pub fn parse(text: &[u8]) -> Result<Keys, (usize, &'static str)> {
        let mut keys = Vec::new();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let bad = |reason| Err((index + 1, reason));
            if !line.iter().all(|b| b.is_ascii_graphic()) {
                return bad("a key must be visible ASCII without spaces");
            }
            match Padded::new(line) {
                Some(key) => keys.push(key),
                None => return bad("a key is longer than 256 bytes"),
            }
        }
        Ok(Keys(keys))
    }

    /// Whether `presented` is one of the keys. Every key is compared, each
    /// in constant time, so the time taken says nothing about which key
    /// matched or how much of one did.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let Some(presented) = Padded::new(presented) else {
            // Longer than any key can be: that says nothing about the keys.
            return false;
        };
        let matched = self.0.iter().fold(Choice::from(0), |matched, key| {
            matched | key.ct_eq(&presented)
        });
        matched.into()
    }

    /// How many keys there are.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

/// Reads and parses the key file at `path`.
pub(crate) fn load(path: &Path) -> Result<Keys, KeyFileError> {
    let text = read(path)?;
    parse_file(path, &text)
}

fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    use std::io::Read;
    let read_error = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

fn parse_file(path: &Path, text: &[u8]) -> Result<Keys, KeyFileError> {
    let keys = Keys::parse(text).map_err(|(line, reason)| KeyFileError::BadLine {
        path: path.to_path_buf(),
        line,
        reason,
    })?;
    if keys.count() == 0 {
        return Err(KeyFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(keys)
}

/// The keys in force, swapped whole when the file changes.
pub(crate) struct KeyStore {
    path: PathBuf,
    current: RwLock<Arc<Keys>>,
    /// The file's contents when it was opened: the watcher's starting
    /// point, so a change made before it first looks is not missed.
    opened: Vec<u8>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the contents: they are the keys.
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("keys", &self.keys().count())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// The store for the file at `path`, loaded now.
    pub(crate) fn open(path: &Path) -> Result<KeyStore, KeyFileError> {
        let opened = read(path)?;
        let keys = parse_file(path, &opened)?;
        Ok(KeyStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(keys)),
            opened,
        })
    }

    /// The keys in force now.
    pub(crate) fn keys(&self) -> Arc<Keys> {
        // A writer cannot panic while holding the lock (it only swaps an
        // Arc), so a poisoned lock still holds a whole value.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace(&self, keys: Keys) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Reads the file every `interval` for as long as the task runs; new
    /// contents that parse replace the keys, anything else is logged once
    /// and the keys in force stay. The file is compared by contents, not
    /// modification time: a Kubernetes Secret is rotated by swapping a
    /// symlink, and a rewrite within one second keeps the time.
    pub(crate) async fn watch(self: Arc<Self>, interval: Duration) {
        // What the file held at the last look (or why it could not be
        // read), so each change is acted on and logged once.
        let mut last: Result<Vec<u8>, String> = Ok(self.opened.clone());
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let path = self.path.clone();
            let seen = match tokio::task::spawn_blocking(move || read(&path)).await {
                Ok(read) => read.map_err(|e| e.to_string()),
                Err(e) => Err(format!("reading the API key file failed: {e}")),
            };
            if seen == last {
                continue;
            }
            match &seen {
                Ok(text) => match parse_file(&self.path, text) {
                    Ok(keys) => {
                        tracing::info!(
                            path = %self.path.display(),
                            keys = keys.count(),
                            "API keys reloaded"
                        );
                        self.replace(keys);
                    }
                    Err(e) => tracing::warn!("{e}; the keys in force stay"),
                },
                Err(e) => tracing::warn!("{e}; the keys in force stay"),
            }
            last = seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_skip_blank_lines_and_comments_and_are_trimmed() {
        let keys = Keys::parse(b"# team a\nalpha-123\n\n   \n  beta_456\r\n#gamma\n").unwrap();
        assert_eq!(keys.count(), 2);
        assert!(keys.accepts(b"alpha-123"));
        assert!(keys.accepts(b"beta_456"));
        for wrong in [
            &b"gamma"[..],
            b"#gamma",
            b"alpha-12",
            b"alpha-1234",
            b"",
            b"ALPHA-123",
        ] {
            assert!(!keys.accepts(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn bad_lines_are_named_by_number_without_their_text() {
        let (line, reason) = Keys::parse(b"good\nhas space\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(!reason.contains("has space"));
        assert_eq!(Keys::parse("ok\nnön-ascii".as_bytes()).unwrap_err().0, 2);
        let long = vec![b'k'; MAX_KEY_LEN + 1];
        assert_eq!(Keys::parse(&long).unwrap_err().0, 1);
        let longest = vec![b'k'; MAX_KEY_LEN];
        let keys = Keys::parse(&longest).unwrap();
        assert!(keys.accepts(&longest));
        assert!(!keys.accepts(&long), "longer than any key");
    }

    #[test]
    fn a_padded_key_differs_from_its_prefix_and_zero_padding() {
        // Zero padding must not make "ab" equal "ab\0".
        let keys = Keys::parse(b"ab").unwrap();
        assert!(!keys.accepts(b"ab\0"));
        assert!(!keys.accepts(b"a"));
    }

    #[test]
    fn files_without_keys_or_too_large_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# nothing yet\n\n").unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Empty { .. })));
        std::fs::write(&path, vec![b'k'; MAX_FILE_LEN as usize + 1]).unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::TooLarge { .. })));
        let missing = dir.path().join("missing");
        let error = load(&missing).unwrap_err().to_string();
        assert!(error.contains("missing"), "{error}");
        std::fs::write(&path, "s3cret-key\nbad key\n").unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        assert!(!error.contains("bad key"), "{error}");
    }

    #[test]
    fn debug_never_shows_a_key() {
        let keys = Keys::parse(b"s3cret-key").unwrap();
        let shown = format!("{keys:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(shown, "Keys(1 keys)");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "s3cret-key\n").unwrap();
        let store = KeyStore::open(&path).unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("115, 51"), "no bytes either: {shown}");
    }

    #[tokio::test]
    async fn the_store_follows_the_file_and_keeps_its_keys_when_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "old-key\n").unwrap();
        let store = Arc::new(KeyStore::open(&path).unwrap());
        let task = tokio::spawn(Arc::clone(&store).watch(Duration::from_millis(20)));
        let wait_for = |accepts: &'static [u8], expected: bool| {
            let store = Arc::clone(&store);
            async move {
                for _ in 0..500 {
                    if store.keys().accepts(accepts) == expected {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("{accepts:?} never became {expected}");
            }
        };

        std::fs::write(&path, "new-key\n").unwrap();
        wait_for(b"new-key", true).await;
        assert!(!store.keys().accepts(b"old-key"), "rotated out");

        // A broken file, an empty one, then none: the keys in force stay
        // (each looked at by ten polls or so).
        let settle = Duration::from_millis(200);
        std::fs::write(&path, "new key with spaces\n").unwrap();
        tokio::time::sleep(settle).await;
        assert!(store.keys().accepts(b"new-key"));
        std::fs::write(&path, "").unwrap();
        tokio::time::sleep(settle).await;
        assert!(store.keys().accepts(b"new-key"));
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(settle).await;
        assert!(store.keys().accepts(b"new-key"));

        // Back with good contents: taken.
        std::fs::write(&path, "third-key\n").unwrap();
        wait_for(b"third-key", true).await;
        task.abort();
    }
}
