//! TLS (feature `tls`) against a mock server with a test certificate for
//! `localhost` and `127.0.0.1`, signed by `client/tests/tls/ca.pem`.

use super::*;
use crate::{
    mock,
    tls::{Certificate, ClientTlsConfig},
};

fn trusting_the_test_ca() -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(include_str!(
        "../../tests/tls/ca.pem"
    )))
}

#[tokio::test]
async fn https_with_a_trusted_ca_works() {
    let server = mock::start_tls().await;
    let port = server.addr.port();
    for host in ["localhost", "127.0.0.1"] {
        let client = Client::builder(format!("https://{host}:{port}"))
            .tls(trusting_the_test_ca())
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(client.is_live().await.unwrap());
        let response = client
            .infer("echo")
            .input("x", [2], &[1.5f32, 2.5])
            .send()
            .await;
        assert_eq!(
            response.unwrap().output("x").unwrap().as_f32().unwrap(),
            [1.5, 2.5]
        );
    }
}

#[tokio::test]
async fn a_dns_target_checks_the_certificate_against_the_name() {
    let server = mock::start_tls().await;
    let client = Client::dns(format!("https://localhost:{}", server.addr.port()))
        .tls(trusting_the_test_ca())
        .connect()
        .await
        .unwrap();
    assert!(client.endpoints().iter().all(|e| e.starts_with("https://")));
    assert!(client.is_ready().await.unwrap());
}

#[tokio::test]
async fn an_untrusted_certificate_or_plaintext_fails() {
    let server = mock::start_tls().await;
    let port = server.addr.port();
    // The operating system's roots do not include the test CA.
    let err = Client::builder(format!("https://localhost:{port}"))
        .retry(RetryPolicy::never())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    let plaintext = Client::builder(format!("http://localhost:{port}"))
        .retry(RetryPolicy::never())
        .timeout(Duration::from_secs(5))
        .connect_lazy()
        .unwrap();
    assert!(plaintext.is_live().await.is_err());
}
