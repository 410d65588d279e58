//! Connection options and connecting: [`ClientBuilder`].

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use tonic::{
    codegen::http::Uri,
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::Endpoint,
};

use crate::{
    Client, Error, Result, RetryPolicy,
    balance::{self, Backend, Pool},
    client::{DEFAULT_MAX_MESSAGE_SIZE, Settings},
};

/// The `user-agent` sent unless [`ClientBuilder::user_agent`] says
/// otherwise (tonic appends its own name and version).
pub const DEFAULT_USER_AGENT: &str = concat!("oxserve-client/", env!("CARGO_PKG_VERSION"));

/// How often a DNS target is resolved again unless
/// [`ClientBuilder::resolve_interval`] says otherwise.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// Connection options for a [`Client`]; from [`Client::builder`],
/// [`Client::balanced`] or [`Client::dns`].
///
/// ```no_run
/// use std::time::Duration;
///
/// use oxserve_client::{Client, RetryPolicy};
///
/// # async fn run() -> oxserve_client::Result<()> {
/// let client = Client::builder("http://127.0.0.1:8001")
///     .connect_timeout(Duration::from_secs(2))
///     .timeout(Duration::from_secs(10))
///     .keep_alive(Duration::from_secs(30), Duration::from_secs(10))
///     .max_message_size(256 << 20)
///     .user_agent("my-app/1.2")
///     .api_key("s3cret")
///     .header("x-tenant", "blue")
///     .retry(RetryPolicy::default().max_attempts(3))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `connect` is called"]
pub struct ClientBuilder {
    target: Target,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    max_send_message_size: usize,
    max_receive_message_size: usize,
    keep_alive: Option<(Duration, Duration)>,
    keep_alive_while_idle: bool,
    tcp_keepalive: Option<Duration>,
    user_agent: String,
    headers: Headers,
    retry: RetryPolicy,
    resolve_interval: Duration,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

#[derive(Clone, Debug)]
enum Target {
    /// Fixed endpoints, balanced in turn.
    List(Vec<String>),
    /// A DNS name whose addresses are the endpoints.
    Dns(String),
}

impl ClientBuilder {
    pub(crate) fn list(endpoints: Vec<String>) -> Self {
        ClientBuilder::new(Target::List(endpoints))
    }

    pub(crate) fn dns(endpoint: String) -> Self {
        ClientBuilder::new(Target::Dns(endpoint))
    }

    fn new(target: Target) -> Self {
        ClientBuilder {
            target,
            connect_timeout: None,
            timeout: None,
            max_send_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_receive_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            keep_alive: None,
            keep_alive_while_idle: false,
            tcp_keepalive: None,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            headers: Headers::default(),
            retry: RetryPolicy::default(),
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Limits how long establishing a connection may take. Default: no
    /// limit beyond the operating system's.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Limits each request (each attempt, when retried). The deadline is
    /// sent to the server as `grpc-timeout` and enforced locally; a request
    /// that runs past it fails with [`tonic::Code::DeadlineExceeded`].
    /// Default: no limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Limits the size of one message, sent or received, in bytes. Default:
    /// [`DEFAULT_MAX_MESSAGE_SIZE`] (64 MiB) both ways.
    pub fn max_message_size(self, bytes: usize) -> Self {
        self.max_send_message_size(bytes)
            .max_receive_message_size(bytes)
    }

    /// Limits the size of one request message, in bytes. A larger request
    /// fails with `OUT_OF_RANGE` before anything is sent. Default: 64 MiB.
    pub fn max_send_message_size(mut self, bytes: usize) -> Self {
        self.max_send_message_size = bytes;
        self
    }

    /// Limits the size of one response message, in bytes; a larger
    /// response fails with `OUT_OF_RANGE`. Default: 64 MiB.
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.max_receive_message_size = bytes;
        self
    }

    /// Sends an HTTP/2 ping every `interval` and drops the connection if
    /// no answer comes within `timeout`, so a server that vanished without
    /// closing the connection (a pod killed, a cable pulled) is noticed
    /// and requests fail over. Default: off.
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Whether keep-alive pings are sent while no request is in flight.
    /// Default: no.
    pub fn keep_alive_while_idle(mut self, enabled: bool) -> Self {
        self.keep_alive_while_idle = enabled;
        self
    }

    /// Sets TCP keep-alive on the socket. Default: off.
    pub fn tcp_keepalive(mut self, interval: Option<Duration>) -> Self {
        self.tcp_keepalive = interval;
        self
    }

    /// Sets the `user-agent` (tonic appends its own). Default:
    /// [`DEFAULT_USER_AGENT`].
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Adds a metadata header sent with every request, such as an API key.
    /// Names are lower-case ASCII; an invalid name or value fails `connect`
    /// with [`Error::Config`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.0.push((name.into(), value.into()));
        self
    }

    /// Sends `authorization: Bearer <token>` with every request.
    pub fn bearer_token(self, token: impl AsRef<str>) -> Self {
        self.api_key(token)
    }

    /// Sends the API key as `authorization: Bearer <key>` with every call
    /// the client makes: unary calls, [`Client::stream_infer`], health
    /// checks and [`Client::wait_until_serving`]. This is what a server
    /// run with `--api-keys` asks for; a missing key fails with
    /// `UNAUTHENTICATED`, a wrong one with `PERMISSION_DENIED`. A key that
    /// is not a valid header value fails `connect` with [`Error::Config`].
    ///
    /// ```no_run
    /// # async fn run() -> oxserve_client::Result<()> {
    /// let key = std::env::var("OXSERVE_API_KEY").unwrap_or_default();
    /// let client = oxserve_client::Client::builder("http://127.0.0.1:8001")
    ///     .api_key(key)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn api_key(self, key: impl AsRef<str>) -> Self {
        let value = format!("Bearer {}", key.as_ref());
        self.header("authorization", value)
    }

    /// Which failed calls are retried and how; see [`RetryPolicy`].
    /// Default: [`RetryPolicy::default`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How often a [`Client::dns`] name is resolved again. Default:
    /// [`DEFAULT_RESOLVE_INTERVAL`] (10 s).
    pub fn resolve_interval(mut self, interval: Duration) -> Self {
        self.resolve_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Speaks TLS with these settings (roots, client identity, server
    /// name). Without this, `https://` endpoints trust the operating
    /// system's roots. For a [`Client::dns`] target the server name checked
    /// is the DNS name.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects, failing with [`Error::Connect`] if no endpoint can be
    /// reached. With several endpoints, one reachable endpoint is enough:
    /// the others are connected to when they come up.
    pub async fn connect(self) -> Result<Client> {
        let settings = self.settings()?;
        let pool = match &self.target {
            Target::List(endpoints) => {
                let endpoints = self.list_endpoints(endpoints)?;
                let backends = connect_all(endpoints).await?;
                Arc::new(Pool::new(self.target_name(), backends, None))
            }
            Target::Dns(name) => {
                let dns = DnsTarget::parse(name)?;
                // Sorted and unique, the order the resolver task keeps too.
                let addrs: BTreeSet<SocketAddr> =
                    tokio::net::lookup_host((dns.host.as_str(), dns.port))
                        .await
                        .map_err(|e| Error::connect(name.as_str(), e))?
                        .collect();
                if addrs.is_empty() {
                    return Err(Error::connect(
                        name.as_str(),
                        "the name resolved to no addresses",
                    ));
                }
                let endpoints = addrs
                    .iter()
                    .map(|addr| {
                        let endpoint = self.resolved_endpoint(&dns, *addr)?;
                        Ok((endpoint, format!("{}://{addr}", dns.scheme), Some(*addr)))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let backends = connect_all(endpoints).await?;
                self.dns_pool(&dns, backends)?
            }
        };
        Ok(Client::new(pool, settings))
    }

    /// Returns a client at once and connects on its first request; a server
    /// that cannot be reached then fails that request with `UNAVAILABLE`.
    /// A [`Client::dns`] name is resolved in the background; until it has
    /// resolved, requests fail with `UNAVAILABLE` (and are retried).
    ///
    /// # Errors
    /// [`Error::Connect`] if an endpoint is not a valid URI; [`Error::Config`]
    /// for invalid headers or an empty endpoint list.
    pub fn connect_lazy(self) -> Result<Client> {
        let settings = self.settings()?;
        let pool = match &self.target {
            Target::List(endpoints) => {
                let backends = self
                    .list_endpoints(endpoints)?
                    .into_iter()
                    .map(|(endpoint, name, addr)| Backend::new(name, addr, endpoint.connect_lazy()))
                    .collect();
                Arc::new(Pool::new(self.target_name(), backends, None))
            }
            Target::Dns(name) => self.dns_pool(&DnsTarget::parse(name)?, Vec::new())?,
        };
        Ok(Client::new(pool, settings))
    }

    fn target_name(&self) -> String {
        match &self.target {
            Target::List(list) => list.join(","),
            Target::Dns(name) => name.clone(),
        }
    }

    fn settings(&self) -> Result<Settings> {
        let metadata = self
            .headers
            .0
            .iter()
            .map(|(name, value)| parse_header(name, value))
            .collect::<Result<Vec<_>>>()?;
        Ok(Settings {
            timeout: self.timeout,
            max_send_message_size: self.max_send_message_size,
            max_receive_message_size: self.max_receive_message_size,
            retry: self.retry.clone(),
            metadata: metadata.into(),
        })
    }

    fn list_endpoints(
        &self,
        endpoints: &[String],
    ) -> Result<Vec<(Endpoint, String, Option<SocketAddr>)>> {
        if endpoints.is_empty() {
            return Err(Error::config("no endpoints given"));
        }
        endpoints
            .iter()
            .map(|uri| Ok((self.endpoint(uri, None)?, uri.clone(), None)))
            .collect()
    }

    /// The tonic endpoint for `uri` with every option applied; `dns` says
    /// which name it was resolved from, for `:authority` and TLS.
    fn endpoint(&self, uri: &str, dns: Option<&DnsTarget>) -> Result<Endpoint> {
        let connect_error = |e: tonic::transport::Error| Error::connect(uri, e);
        let mut endpoint = Endpoint::from_shared(uri.to_owned()).map_err(connect_error)?;
        endpoint = endpoint
            .user_agent(self.user_agent.clone())
            .map_err(|e| Error::config(format!("invalid user agent '{}': {e}", self.user_agent)))?
            .tcp_keepalive(self.tcp_keepalive)
            .keep_alive_while_idle(self.keep_alive_while_idle);
        if let Some(timeout) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        if let Some((interval, timeout)) = self.keep_alive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        if let Some(dns) = dns {
            endpoint = endpoint.origin(dns.origin.clone());
        }
        self.with_tls(endpoint, uri, dns)
    }

    #[cfg(feature = "tls")]
    fn with_tls(&self, endpoint: Endpoint, uri: &str, dns: Option<&DnsTarget>) -> Result<Endpoint> {
        let https = endpoint.uri().scheme_str() == Some("https");
        let config = match (&self.tls, https) {
            (Some(config), _) => config.clone(),
            (None, true) => tonic::transport::ClientTlsConfig::new().with_enabled_roots(),
            (None, false) => return Ok(endpoint),
        };
        let config = match dns {
            Some(dns) => config.domain_name(dns.host.clone()),
            None => config,
        };
        endpoint
            .tls_config(config)
            .map_err(|e| Error::connect(uri, e))
    }

    #[cfg(not(feature = "tls"))]
    fn with_tls(&self, endpoint: Endpoint, _: &str, _: Option<&DnsTarget>) -> Result<Endpoint> {
        if endpoint.uri().scheme_str() == Some("https") {
            Err(Error::config(
                "an https:// endpoint needs oxserve-client's `tls` feature",
            ))
        } else {
            Ok(endpoint)
        }
    }

    fn resolved_endpoint(&self, dns: &DnsTarget, addr: SocketAddr) -> Result<Endpoint> {
        self.endpoint(&format!("{}://{addr}", dns.scheme), Some(dns))
    }

    /// A pool for `dns` starting with `backends`, and the task that keeps
    /// it up to date.
    fn dns_pool(&self, dns: &DnsTarget, backends: Vec<Backend>) -> Result<Arc<Pool>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a DNS target needs a tokio runtime to resolve it in"))?;
        let fallback = self.endpoint(&dns.uri, None)?.connect_lazy();
        let pool = Arc::new(Pool::new(dns.uri.clone(), backends, Some(fallback)));
        let builder = self.clone();
        let target = dns.clone();
        let make = move |addr: SocketAddr| {
            let endpoint = builder.resolved_endpoint(&target, addr).ok()?;
            let name = format!("{}://{addr}", target.scheme);
            Some(Backend::new(name, Some(addr), endpoint.connect_lazy()))
        };
        let task = runtime.spawn(balance::resolve_periodically(
            Arc::downgrade(&pool),
            dns.host.clone(),
            dns.port,
            self.resolve_interval,
            make,
        ));
        pool.set_resolver(task.abort_handle());
        Ok(pool)
    }
}

/// Connects to every endpoint at once. Those that fail stay as lazy
/// connections, retried on use, unless all fail: then the first endpoint's
/// error is returned.
async fn connect_all(
    endpoints: Vec<(Endpoint, String, Option<SocketAddr>)>,
) -> Result<Vec<Backend>> {
    let count = endpoints.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (endpoint, name, addr)) in endpoints.into_iter().enumerate() {
        tasks.spawn(async move {
            let result = endpoint.connect().await;
            (index, endpoint, name, addr, result)
        });
    }
    let mut slots: Vec<Option<Backend>> = (0..count).map(|_| None).collect();
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A connect future does not panic; if one did, that endpoint is
        // simply left out.
        let Ok((index, endpoint, name, addr, result)) = joined else {
            continue;
        };
        let channel = match result {
            Ok(channel) => channel,
            Err(error) => {
                errors.push((index, Error::connect(name.clone(), error)));
                endpoint.connect_lazy()
            }
        };
        slots[index] = Some(Backend::new(name, addr, channel));
    }
    if errors.len() == count {
        errors.sort_by_key(|(index, _)| *index);
        if let Some((_, error)) = errors.into_iter().next() {
            return Err(error);
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// A `scheme://host:port` name to resolve, e.g. a headless Service.
#[derive(Clone, Debug)]
struct DnsTarget {
    uri: String,
    scheme: String,
    host: String,
    port: u16,
    origin: Uri,
}

impl DnsTarget {
    fn parse(name: &str) -> Result<Self> {
        let uri: Uri = name
            .parse()
            .map_err(|e| Error::connect(name, format!("not a URI: {e}")))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let host = uri
            .host()
            .ok_or_else(|| Error::connect(name, "the URI has no host"))?
            // An IPv6 literal comes bracketed; the resolver wants it bare.
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(DnsTarget {
            uri: name.to_owned(),
            scheme,
            host,
            port,
            origin: uri,
        })
    }
}

/// The configured headers; `Debug` shows the values of credentials (an API
/// key, a token) as `<redacted>`, so printing a builder cannot leak them.
#[derive(Clone, Default)]
struct Headers(Vec<(String, String)>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if is_sensitive(name) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name, shown)
            }))
            .finish()
    }
}

/// Header names whose values are credentials.
fn is_sensitive(name: &str) -> bool {
    name == "authorization" || name.contains("token") || name.contains("key")
}

fn parse_header(name: &str, value: &str) -> Result<(AsciiMetadataKey, AsciiMetadataValue)> {
    let key = AsciiMetadataKey::from_bytes(name.as_bytes())
        .map_err(|e| Error::config(format!("invalid header name '{name}': {e}")))?;
    let mut value = AsciiMetadataValue::try_from(value)
        .map_err(|e| Error::config(format!("invalid value for header '{name}': {e}")))?;
    // Keeps credentials out of debug output (and HPACK's dynamic table).
    if is_sensitive(name) {
        value.set_sensitive(true);
    }
    Ok((key, value))
}
