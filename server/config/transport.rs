//! Checks of the TLS and connection-limit settings (docs/security.md).

use std::time::Duration;

use super::{Config, ConfigError};

impl Config {
    /// Whether TLS is on (the gRPC and REST ports).
    pub(crate) fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }

    pub(super) fn validate_transport(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return invalid("tls_key", "tls_cert is set but tls_key is not".into());
            }
            (None, Some(_)) => {
                return invalid("tls_cert", "tls_key is set but tls_cert is not".into());
            }
            _ => {}
        }
        if self.tls_cert.is_none() {
            if self.tls_client_ca.is_some() {
                return invalid("tls_client_ca", "needs tls_cert and tls_key".into());
            }
            if self.metrics_tls {
                return invalid("metrics_tls", "needs tls_cert and tls_key".into());
            }
        }
        for (key, file) in [
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_client_ca", &self.tls_client_ca),
        ] {
            if let Some(file) = file
                && !file.is_file()
            {
                return invalid(key, format!("'{}' is not a file", file.display()));
            }
        }
        if self.tls_reload_interval < Duration::from_millis(100) {
            return invalid(
                "tls_reload_interval",
                format!("{:?} is less than 100ms", self.tls_reload_interval),
            );
        }
        if let Some(health) = self.health_address {
            let taken = [
                ("grpc_address", Some(self.grpc_address)),
                ("http_address", self.http.then_some(self.http_address)),
                (
                    "metrics_address",
                    self.metrics.then_some(self.metrics_address),
                ),
            ];
            if let Some((key, _)) = taken
                .iter()
                .find(|(_, a)| *a == Some(health) && health.port() != 0)
            {
                return invalid("health_address", format!("{health} is also {key}"));
            }
        }
        if !(1..=i32::MAX as u32).contains(&self.http2_max_concurrent_streams) {
            return invalid(
                "http2_max_concurrent_streams",
                format!(
                    "{} is outside 1..=2147483647",
                    self.http2_max_concurrent_streams
                ),
            );
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http2_max_header_list_size) {
            return invalid(
                "http2_max_header_list_size",
                format!(
                    "{} bytes is outside 1KiB..=16MiB",
                    self.http2_max_header_list_size
                ),
            );
        }
        if self.http2_keepalive_timeout.is_zero() {
            return invalid("http2_keepalive_timeout", "must be more than 0s".into());
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return invalid(
                "max_connections",
                format!("{} is outside 1..=1000000", self.max_connections),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config {
            model_repository: std::env::temp_dir(),
            ..Config::default()
        }
    }

    fn rejected(config: Config) -> (&'static str, String) {
        match config.validate() {
            Err(ConfigError::Invalid { key, reason }) => (key, reason),
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn defaults_validate() {
        assert!(base().validate().is_ok());
    }

    #[test]
    fn tls_settings_come_in_pairs_and_need_files() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let path = file.path().to_path_buf();
        let cert_only = Config {
            tls_cert: Some(path.clone()),
            ..base()
        };
        assert_eq!(rejected(cert_only).0, "tls_key");
        let key_only = Config {
            tls_key: Some(path.clone()),
            ..base()
        };
        assert_eq!(rejected(key_only).0, "tls_cert");
        let ca_only = Config {
            tls_client_ca: Some(path.clone()),
            ..base()
        };
        assert_eq!(rejected(ca_only).0, "tls_client_ca");
        let metrics_only = Config {
            metrics_tls: true,
            ..base()
        };
        assert_eq!(rejected(metrics_only).0, "metrics_tls");
        let missing = Config {
            tls_cert: Some(path.clone()),
            tls_key: Some("/nonexistent/tls.key".into()),
            ..base()
        };
        let (key, reason) = rejected(missing);
        assert_eq!(key, "tls_key");
        assert!(reason.contains("/nonexistent/tls.key"), "{reason}");
        let both = Config {
            tls_cert: Some(path.clone()),
            tls_key: Some(path),
            ..base()
        };
        assert!(both.validate().is_ok());
    }

    #[test]
    fn limits_are_range_checked() {
        let cases = [
            Config {
                tls_reload_interval: Duration::from_millis(10),
                ..base()
            },
            Config {
                http2_max_concurrent_streams: 0,
                ..base()
            },
            Config {
                http2_max_header_list_size: 100,
                ..base()
            },
            Config {
                http2_keepalive_timeout: Duration::ZERO,
                ..base()
            },
            Config {
                max_connections: 0,
                ..base()
            },
            Config {
                health_address: Some(base().grpc_address),
                ..base()
            },
        ];
        let keys: Vec<&str> = cases.into_iter().map(|c| rejected(c).0).collect();
        assert_eq!(
            keys,
            [
                "tls_reload_interval",
                "http2_max_concurrent_streams",
                "http2_max_header_list_size",
                "http2_keepalive_timeout",
                "max_connections",
                "health_address",
            ]
        );
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail closures return figment::Error, which is large; its API, not ours"
    )]
    fn settings_read_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OXSERVE_MAX_CONNECTIONS", "10");
            jail.set_env("OXSERVE_HTTP2_MAX_HEADER_LIST_SIZE", "32KiB");
            jail.set_env("OXSERVE_MAX_CONNECTION_AGE", "15m");
            jail.set_env("OXSERVE_HEALTH_ADDRESS", "0.0.0.0:8003");
            let config: Config = Config::figment(None, figment::value::Dict::new()).extract()?;
            assert_eq!(config.max_connections, 10);
            assert_eq!(config.http2_max_header_list_size, 32 * 1024);
            assert_eq!(config.max_connection_age, Duration::from_secs(900));
            assert_eq!(
                config.health_address,
                Some("0.0.0.0:8003".parse().expect("address"))
            );
            Ok(())
        });
    }
}
