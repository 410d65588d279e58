//! One registered region: a range of a `/dev/shm` file, mapped shared.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

use super::{RegionStatus, SHM_DIR, ShmError};

/// A mapped region. The mapping covers exactly `byte_size` bytes; every
/// access is checked against that before it is made.
#[derive(Debug)]
pub(crate) struct Region {
    name: String,
    key: String,
    offset: u64,
    byte_size: u64,
    map: MmapRaw,
}

/// The file under /dev/shm that `key` names. POSIX shared memory names
/// start with one `/` (`shm_open("/input")` is `/dev/shm/input`); the rest
/// must be a plain file name, so no key reaches outside /dev/shm.
fn path_of(key: &str) -> Result<PathBuf, ShmError> {
    let invalid = |reason| ShmError::InvalidKey {
        key: key.into(),
        reason,
    };
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty() {
        return Err(invalid("is empty"));
    }
    if name.contains('/') {
        return Err(invalid(
            "must name a file directly under /dev/shm (no '/' after the first character)",
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid("must name a file, not a directory"));
    }
    if name.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    Ok(PathBuf::from(SHM_DIR).join(name))
}

impl Region {
    /// Maps `byte_size` bytes from `offset` of the object `key`.
    pub(super) fn map(
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<Region, ShmError> {
        let path = path_of(key)?;
        let map_error = |source| ShmError::Map {
            key: key.into(),
            source,
        };
        if byte_size == 0 {
            return Err(ShmError::OutOfBounds(format!(
                "shared memory region '{name}' has a byte_size of 0"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            // A symbolic link planted in /dev/shm must not lead elsewhere.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(map_error)?;
        let metadata = file.metadata().map_err(map_error)?;
        if !metadata.is_file() {
            return Err(ShmError::InvalidKey {
                key: key.into(),
                reason: "is not a regular file",
            });
        }
        let end = offset.checked_add(byte_size);
        if end.is_none_or(|end| end > metadata.len()) {
            return Err(ShmError::OutOfBounds(format!(
                "shared memory region '{name}': offset {offset} + byte_size {byte_size} is past the end of '{key}' ({} bytes)",
                metadata.len()
            )));
        }
        let len = usize::try_from(byte_size).map_err(|_| {
            ShmError::OutOfBounds(format!("shared memory region '{name}' is too large to map"))
        })?;
        // memmap2 aligns the offset down to a page itself.
        let map = MmapOptions::new()
            .offset(offset)
            .len(len)
            .map_raw(&file)
            .map_err(map_error)?;
        Ok(Region {
            name: name.into(),
            key: key.into(),
            offset,
            byte_size,
            map,
        })
    }

    /// What Status reports.
    pub(crate) fn status(&self) -> RegionStatus {
        RegionStatus {
            name: self.name.clone(),
            key: self.key.clone(),
            offset: self.offset,
            byte_size: self.byte_size,
        }
    }

    /// The in-region range `offset..offset + size`, checked.
    fn range(&self, offset: u64, size: u64) -> Result<(usize, usize), ShmError> {
        match offset.checked_add(size) {
            Some(end) if end <= self.byte_size => {
                // Both are within the mapping's length, which is a usize.
                Ok((offset as usize, size as usize))
            }
            _ => Err(ShmError::OutOfBounds(format!(
                "offset {offset} + byte size {size} is past the end of shared memory region '{}' ({} bytes)",
                self.name, self.byte_size
            ))),
        }
    }

    /// A copy of `size` bytes from `offset` in the region.
    pub(crate) fn read(&self, offset: u64, size: u64) -> Result<Bytes, ShmError> {
        let (start, len) = self.range(offset, size)?;
        // Not zeroed first: for a tensor of megabytes, zeroing costs as much
        // as the copy itself.
        let mut out = Vec::<u8>::with_capacity(len);
        // SAFETY: `start + len <= byte_size`, the mapping's length (checked
        // by `range`), so the source lies inside the live mapping `self`
        // owns; `out` is a separate allocation with room for `len` bytes,
        // all of which the copy initialises before `set_len` exposes them.
        // The bytes are copied, never referenced, so another process writing
        // the region at the same time changes at worst the values copied.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(start), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        Ok(Bytes::from(out))
    }

    /// Writes `data` at `offset` in the region.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) -> Result<(), ShmError> {
        let (start, len) = self.range(offset, data.len() as u64)?;
        // SAFETY: `start + len <= byte_size`, the mapping's length (checked
        // by `range`); the mapping is shared and writable (the file was
        // opened read-write) and `data` is our own buffer, so the ranges do
        // not overlap. No reference to the mapped bytes is made.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(start), len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_directly_under_dev_shm() {
        assert_eq!(path_of("/input").unwrap(), PathBuf::from("/dev/shm/input"));
        assert_eq!(path_of("input").unwrap(), PathBuf::from("/dev/shm/input"));
        for bad in [
            "",
            "/",
            "/../etc/passwd",
            "../x",
            "/a/b",
            "/..",
            "..",
            "/.",
            "a\0b",
        ] {
            assert!(path_of(bad).is_err(), "{bad:?}");
        }
    }

    /// A shared memory object for one test, removed when dropped.
    struct Object(String);

    impl Object {
        fn new(tag: &str, bytes: &[u8]) -> Object {
            let key = format!("/oxserve-test-{tag}-{}", std::process::id());
            std::fs::write(path_of(&key).unwrap(), bytes).unwrap();
            Object(key)
        }
    }

    impl Drop for Object {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(path_of(&self.0).unwrap());
        }
    }

    #[test]
    fn reads_and_writes_stay_inside_the_region() {
        let object = Object::new("bounds", &(0u8..=255).collect::<Vec<_>>());
        // Bytes 10..110 of the object: an offset that is not page-aligned.
        let region = Region::map("r", &object.0, 10, 100).unwrap();
        assert_eq!(&region.read(0, 3).unwrap()[..], &[10, 11, 12]);
        assert_eq!(region.read(99, 1).unwrap()[..], [109]);
        assert_eq!(region.read(100, 0).unwrap().len(), 0);
        assert!(region.read(99, 2).is_err());
        assert!(region.read(u64::MAX, 2).is_err());
        assert!(region.read(1, u64::MAX).is_err());
        region.write(98, &[1, 2]).unwrap();
        assert!(region.write(99, &[1, 2]).is_err());
        // The write reached the object itself.
        let on_disk = std::fs::read(path_of(&object.0).unwrap()).unwrap();
        assert_eq!(&on_disk[108..110], &[1, 2]);
    }

    #[test]
    fn registrations_must_fit_the_object() {
        let object = Object::new("fit", &[0u8; 64]);
        assert!(Region::map("r", &object.0, 0, 64).is_ok());
        assert!(Region::map("r", &object.0, 1, 64).is_err());
        assert!(Region::map("r", &object.0, u64::MAX, 2).is_err());
        assert!(Region::map("r", &object.0, 0, 0).is_err());
        let missing = Region::map("r", "/oxserve-test-no-such-object", 0, 1).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
}
