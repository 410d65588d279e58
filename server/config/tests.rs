#![expect(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error, which is large; its API, not ours"
)]

use std::path::Path;
use std::time::Duration;

use figment::Jail;
use figment::providers::Serialized;
use serde::Serialize;

use super::*;

#[derive(Serialize, Default)]
struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intra_op_threads: Option<usize>,
}

/// Figment names environment keys as written (`GRPC_ADDRESS`), files and
/// validation in snake case: either way the key is named.
fn names(e: &str, key: &str) -> bool {
    e.to_lowercase().contains(key)
}

fn load(file: Option<&str>, flags: Flags) -> Result<Config, ConfigError> {
    Config::from_figment(&Config::figment(file.map(Path::new), flags))
}

#[test]
fn defaults_parse_and_validate_given_a_repository() {
    Jail::expect_with(|jail| {
        std::fs::create_dir(jail.directory().join("models")).unwrap();
        jail.set_env("OXSERVE_MODEL_REPOSITORY", "models");
        let config = load(None, Flags::default()).unwrap();
        let defaults = Config::default();
        assert_eq!(config.grpc_address, defaults.grpc_address);
        assert_eq!(config.grpc_address.to_string(), "0.0.0.0:8001");
        assert_eq!(config.max_message_size, 256 << 20);
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
        // 0: each instance's share of the CPU quota, worked out at load.
        assert_eq!(config.intra_op_threads, 0);
        Ok(())
    });
}

#[test]
fn layers_apply_in_order_file_then_env_then_flags() {
    Jail::expect_with(|jail| {
        std::fs::create_dir(jail.directory().join("models")).unwrap();
        jail.create_file(
            "oxserve.toml",
            r#"
                model_repository = "models"
                grpc_address = "127.0.0.1:9000"
                max_message_size = "64MiB"
                drain_timeout = "5s"
                intra_op_threads = 2
                max_queue_size = 10
            "#,
        )?;
        let config = load(Some("oxserve.toml"), Flags::default()).unwrap();
        assert_eq!(config.grpc_address.to_string(), "127.0.0.1:9000");
        assert_eq!(config.max_message_size, 64 << 20);
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.max_queue_size, 10);

        jail.set_env("OXSERVE_GRPC_ADDRESS", "127.0.0.1:9001");
        jail.set_env("OXSERVE_INTRA_OP_THREADS", "3");
        let config = load(Some("oxserve.toml"), Flags::default()).unwrap();
        assert_eq!(config.grpc_address.to_string(), "127.0.0.1:9001");
        assert_eq!(config.intra_op_threads, 3);

        let flags = Flags {
            grpc_address: Some("127.0.0.1:9002".into()),
            intra_op_threads: Some(4),
        };
        let config = load(Some("oxserve.toml"), flags).unwrap();
        assert_eq!(config.grpc_address.to_string(), "127.0.0.1:9002");
        assert_eq!(config.intra_op_threads, 4);
        Ok(())
    });
}

#[test]
fn bad_values_name_their_key() {
    Jail::expect_with(|jail| {
        std::fs::create_dir(jail.directory().join("models")).unwrap();
        jail.set_env("OXSERVE_MODEL_REPOSITORY", "models");

        jail.set_env("OXSERVE_GRPC_ADDRESS", "not-an-address");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(names(&e, "grpc_address"), "{e}");
        jail.set_env("OXSERVE_GRPC_ADDRESS", "127.0.0.1:1");

        jail.set_env("OXSERVE_DRAIN_TIMEOUT", "soon");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(names(&e, "drain_timeout"), "{e}");
        jail.set_env("OXSERVE_DRAIN_TIMEOUT", "1s");

        jail.set_env("OXSERVE_MAX_MESSAGE_SIZE", "12 parsecs");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(names(&e, "max_message_size"), "{e}");
        jail.set_env("OXSERVE_MAX_MESSAGE_SIZE", "1KiB");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(names(&e, "max_message_size") && e.contains("4KiB"), "{e}");
        jail.set_env("OXSERVE_MAX_MESSAGE_SIZE", "1MiB");

        jail.set_env("OXSERVE_MAX_QUEUE_SIZE", "0");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(names(&e, "max_queue_size"), "{e}");
        jail.set_env("OXSERVE_MAX_QUEUE_SIZE", "8");

        jail.set_env("OXSERVE_PREFERRED_BATCH_SIZES", "[4, 2048]");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(
            names(&e, "preferred_batch_sizes") && e.contains("2048"),
            "{e}"
        );
        jail.set_env("OXSERVE_PREFERRED_BATCH_SIZES", "[4, 8]");
        assert_eq!(
            load(None, Flags::default()).unwrap().preferred_batch_sizes,
            vec![4, 8]
        );

        jail.set_env("OXSERVE_MAX_QUEUE_DELAY", "1 fortnight");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(names(&e, "max_queue_delay"), "{e}");
        jail.set_env("OXSERVE_MAX_QUEUE_DELAY", "500us");
        assert_eq!(
            load(None, Flags::default()).unwrap().max_queue_delay,
            Duration::from_micros(500)
        );

        jail.set_env("OXSERVE_LOG_LEVEL", "[[[");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(names(&e, "log_level"), "{e}");
        jail.set_env("OXSERVE_LOG_LEVEL", "debug");

        jail.set_env(
            "OXSERVE_ONNXRUNTIME_LIBRARY",
            "/nonexistent/libonnxruntime.so",
        );
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(names(&e, "onnxruntime_library"), "{e}");
        Ok(())
    });
}

#[test]
fn a_missing_repository_is_named() {
    Jail::expect_with(|jail| {
        jail.set_env("OXSERVE_MODEL_REPOSITORY", "nowhere");
        let e = load(None, Flags::default()).unwrap_err().to_string();
        assert!(
            names(&e, "model_repository") && e.contains("nowhere"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn unknown_keys_in_the_file_fail_but_unrelated_env_vars_do_not() {
    Jail::expect_with(|jail| {
        std::fs::create_dir(jail.directory().join("models")).unwrap();
        jail.set_env("OXSERVE_TOOLS", "/somewhere"); // not a config key
        jail.create_file(
            "typo.toml",
            "model_repository = \"models\"\ngrpc_adress = \"x\"\n",
        )?;
        let e = load(Some("typo.toml"), Flags::default())
            .unwrap_err()
            .to_string();
        assert!(names(&e, "grpc_adress"), "{e}");
        jail.create_file("ok.toml", "model_repository = \"models\"\n")?;
        assert!(load(Some("ok.toml"), Flags::default()).is_ok());
        Ok(())
    });
}

#[test]
fn a_missing_config_file_is_an_error() {
    Jail::expect_with(|_| {
        let e = load(Some("absent.toml"), Flags::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.toml"), "{e}");
        Ok(())
    });
}

#[test]
fn byte_sizes_parse_with_units() {
    assert_eq!(byte_size::parse("1048576"), Ok(1 << 20));
    assert_eq!(byte_size::parse("64MiB"), Ok(64 << 20));
    assert_eq!(byte_size::parse("2 GiB"), Ok(2 << 30));
    assert_eq!(byte_size::parse("5MB"), Ok(5_000_000));
    assert!(byte_size::parse("MiB").is_err());
    assert!(byte_size::parse("99999999999999999999GiB").is_err());
}

#[test]
fn every_key_is_a_field_and_every_field_a_key() {
    let all_set = Config {
        onnxruntime_library: Some("lib.so".into()),
        ..Config::default()
    };
    let fields: std::collections::BTreeMap<String, figment::value::Value> =
        figment::Figment::from(Serialized::defaults(all_set))
            .extract()
            .unwrap();
    let mut keys: Vec<&str> = keys();
    keys.sort_unstable();
    assert_eq!(fields.keys().map(String::as_str).collect::<Vec<_>>(), keys);
}

#[test]
fn every_documented_default_is_the_real_default() {
    for setting in SETTINGS {
        if setting.default.starts_with('(') {
            // Unset by default: the documented value describes what is
            // used instead, and the key is absent from the defaults.
            let defaults = figment::Figment::from(Serialized::defaults(Config::default()));
            let value = defaults.find_value(setting.key);
            assert!(
                matches!(value, Err(_) | Ok(figment::value::Value::Empty(..))),
                "{}: documented as computed but set by default to {value:?}",
                setting.key
            );
            continue;
        }
        let value: figment::value::Value = setting.default.parse().unwrap_or_else(|e| match e {});
        let mut dict = figment::value::Dict::new();
        dict.insert(setting.key.to_string(), value);
        let parsed: Config = figment::Figment::from(Serialized::defaults(Config::default()))
            .merge(Serialized::defaults(dict))
            .extract()
            .unwrap_or_else(|e| panic!("{}: default '{}': {e}", setting.key, setting.default));
        assert_eq!(
            parsed,
            Config::default(),
            "{}: documented default '{}' differs from the real one",
            setting.key,
            setting.default
        );
    }
}
