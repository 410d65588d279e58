//! What the model repository holds on disk, read without loading anything:
//! model directories, version directories, and a stamp of every file that
//! loading a version reads, so that the poller sees what changed.
//!
//! Every look-up follows symlinks: Kubernetes volumes (ConfigMaps, Secrets,
//! git-sync) present files through links that are swapped atomically
//! (`..data`), and a swap shows as a changed stamp.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use crate::model_config::CONFIG_FILE;

/// A file's identity and contents version, as far as metadata tells:
/// replaced or rewritten files get another stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    device: u64,
}

/// The stamp of the file at `path`, following links; `None` when there is
/// no such regular file.
pub(super) fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
        device: meta.dev(),
    })
}

/// The files of one version directory, by name, with their stamps.
pub(super) type VersionFiles = BTreeMap<String, Stamp>;

/// What one model directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ModelDir {
    /// config.pbtxt, if there is one.
    pub(super) config: Option<Stamp>,
    /// Each version directory (canonical numbers only) and its files.
    pub(super) versions: BTreeMap<u64, VersionFiles>,
}

/// The model directories under `root` (names not starting with `.`).
pub(super) fn model_names(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `Path::is_dir` follows symlinks.
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Reads `dir` (a model directory); `None` if it is gone.
pub(super) fn scan(dir: &Path) -> Option<ModelDir> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut model = ModelDir {
        config: stamp(&dir.join(CONFIG_FILE)),
        versions: BTreeMap::new(),
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(version) = file_name.to_str().and_then(canonical_version) else {
            continue; // config files, warmup/, labels and the like
        };
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let mut files = VersionFiles::new();
        if let Ok(inner) = std::fs::read_dir(&path) {
            for file in inner.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if let Some(stamp) = stamp(&file.path()) {
                    files.insert(name, stamp);
                }
            }
        }
        model.versions.insert(version, files);
    }
    Some(model)
}

/// A version directory name: decimal digits without leading zeros, so that
/// the directory is found again from the number (`01` would not be).
pub(super) fn canonical_version(name: &str) -> Option<u64> {
    let version = name.parse::<u64>().ok()?;
    (version.to_string() == name).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_canonical_numbers() {
        assert_eq!(canonical_version("1"), Some(1));
        assert_eq!(canonical_version("120"), Some(120));
        for bad in ["01", "+1", "-1", "1.0", "one", ""] {
            assert_eq!(canonical_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_scan_sees_versions_files_and_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir_all(m.join("1")).unwrap();
        std::fs::create_dir_all(m.join("warmup")).unwrap();
        std::fs::write(m.join("1/model.onnx"), b"one").unwrap();
        let first = scan(&m).unwrap();
        assert_eq!(first.config, None);
        assert_eq!(first.versions.keys().collect::<Vec<_>>(), [&1]);
        assert!(first.versions[&1].contains_key("model.onnx"));

        // Replaced through a rename, as a ConfigMap swap does: a new stamp.
        std::fs::write(m.join("1/.model.onnx.tmp"), b"uno").unwrap();
        std::fs::rename(m.join("1/.model.onnx.tmp"), m.join("1/model.onnx")).unwrap();
        std::fs::write(m.join("config.pbtxt"), b"max_batch_size: 0").unwrap();
        let second = scan(&m).unwrap();
        assert_ne!(second.versions[&1], first.versions[&1]);
        assert!(second.config.is_some());
        assert_eq!(scan(&m).unwrap(), second, "unchanged files, same stamps");
        assert!(scan(&dir.path().join("gone")).is_none());
        assert_eq!(model_names(dir.path()).unwrap(), ["m"]);
    }
}
