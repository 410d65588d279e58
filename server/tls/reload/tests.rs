use std::path::PathBuf;

use rcgen::{CertificateParams, KeyPair};

use super::*;
use crate::tls::Alpn;

/// A self-signed certificate and its key, as PEM.
fn self_signed(serial: u64) -> (String, String) {
    let key = KeyPair::generate().expect("ring generates keys");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("valid SAN");
    params.serial_number = Some(serial.into());
    let cert = params.self_signed(&key).expect("self-signs");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    std::fs::write(dir.join("tls.crt"), cert).expect("writes");
    std::fs::write(dir.join("tls.key"), key).expect("writes");
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: None,
    }
}

fn watcher(tls: &Tls) -> Watcher {
    Watcher {
        in_use: Contents::read(&tls.files).expect("readable"),
        last_bad: None,
    }
}

/// The config an acceptor would use now, by identity.
fn current(tls: &Tls) -> Arc<rustls::ServerConfig> {
    Arc::clone(tls.acceptor(Alpn::Http2).config())
}

#[test]
fn new_files_replace_the_config_and_bad_ones_keep_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(1);
    let tls = Tls::load(write(dir.path(), &cert, &key)).expect("loads");
    let mut watcher = watcher(&tls);
    let first = current(&tls);
    assert_eq!(watcher.check(&tls), Outcome::Unchanged);
    assert!(Arc::ptr_eq(&first, &current(&tls)));

    let (cert2, key2) = self_signed(2);
    write(dir.path(), &cert2, &key2);
    assert_eq!(watcher.check(&tls), Outcome::Reloaded);
    let second = current(&tls);
    assert!(!Arc::ptr_eq(&first, &second));

    // A key that does not match the certificate: rejected once, then the
    // same bad bytes are not logged again; the second config stays.
    let (_, other_key) = self_signed(3);
    write(dir.path(), &cert2, &other_key);
    assert_eq!(watcher.check(&tls), Outcome::Rejected);
    assert_eq!(watcher.check(&tls), Outcome::Unchanged);
    assert!(Arc::ptr_eq(&second, &current(&tls)));

    // Not PEM at all, and a missing file: the same.
    write(dir.path(), "garbage", &key2);
    assert_eq!(watcher.check(&tls), Outcome::Rejected);
    std::fs::remove_file(dir.path().join("tls.key")).expect("removes");
    assert_eq!(watcher.check(&tls), Outcome::Rejected);
    assert_eq!(watcher.check(&tls), Outcome::Unchanged);
    assert!(Arc::ptr_eq(&second, &current(&tls)));

    // Good files again are taken.
    let (cert4, key4) = self_signed(4);
    write(dir.path(), &cert4, &key4);
    assert_eq!(watcher.check(&tls), Outcome::Reloaded);
    assert!(!Arc::ptr_eq(&second, &current(&tls)));
}

#[test]
fn a_symlinked_secret_swapped_through_data_is_reloaded() {
    // The layout kubelet writes: tls.crt -> ..data/tls.crt, ..data -> a
    // timestamped directory, swapped by renaming a new symlink over ..data.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let version = |name: &str, serial| {
        let (cert, key) = self_signed(serial);
        std::fs::create_dir(root.join(name)).expect("mkdir");
        write(&root.join(name), &cert, &key);
    };
    version("..2026_01", 1);
    std::os::unix::fs::symlink("..2026_01", root.join("..data")).expect("symlink");
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), root.join(file)).expect("symlink");
    }
    let files = TlsFiles {
        cert: root.join("tls.crt"),
        key: root.join("tls.key"),
        client_ca: None,
    };
    let tls = Tls::load(files).expect("loads");
    let mut watcher = watcher(&tls);
    let first = current(&tls);

    version("..2026_02", 2);
    std::os::unix::fs::symlink("..2026_02", root.join("..data_tmp")).expect("symlink");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("atomic swap");
    std::fs::remove_dir_all(root.join("..2026_01")).expect("old version removed");
    assert_eq!(watcher.check(&tls), Outcome::Reloaded);
    assert!(!Arc::ptr_eq(&first, &current(&tls)));
}

#[test]
fn load_names_the_bad_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(1);
    let mut files = write(dir.path(), &cert, &key);
    files.key = PathBuf::from("/nonexistent/tls.key");
    let e = Tls::load(files.clone()).expect_err("missing key");
    assert!(
        e.to_string().contains("tls_key '/nonexistent/tls.key'"),
        "{e}"
    );

    files.key = dir.path().join("tls.crt");
    let e = Tls::load(files.clone()).expect_err("a certificate is no key");
    assert!(e.to_string().starts_with("tls_key"), "{e}");

    files.key = dir.path().join("tls.key");
    files.client_ca = Some(dir.path().join("tls.key"));
    let e = Tls::load(files).expect_err("a key is no CA");
    assert!(e.to_string().starts_with("tls_client_ca"), "{e}");
}
