//! How to connect: URL, identity (query parameters), token, TLS roots,
//! timeouts, queue sizes and the reconnect policy.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arqon_protocol::{ClientType, MAX_AVATAR_LEN, MAX_PERSONALITY_LEN, MAX_SCREEN_NAME_LEN};
use futures_util::future::BoxFuture;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::error::{ClientError, TokenError};

/// Produces the token for each connection attempt; see
/// [`ConnectOptions::token_provider`].
pub(crate) type TokenProvider =
    Arc<dyn Fn() -> BoxFuture<'static, Result<String, TokenError>> + Send + Sync>;

/// What a client says about itself: the query parameters of SPEC §2, and
/// the arguments of [`identify`](crate::Client::identify).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_type: Option<ClientType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personality: Option<String>,
}

impl Identity {
    /// Checks the limits the server enforces, so that a mistake is reported
    /// before connecting rather than as an HTTP 400.
    pub fn validate(&self) -> Result<(), ClientError> {
        let check = |name: &'static str, value: &Option<String>, max: usize| match value {
            Some(text) if text.is_empty() => Err(ClientError::InvalidOption {
                name,
                reason: "must not be empty".to_owned(),
            }),
            Some(text) if text.chars().count() > max => Err(ClientError::InvalidOption {
                name,
                reason: format!("at most {max} characters"),
            }),
            _ => Ok(()),
        };
        check("screen_name", &self.screen_name, MAX_SCREEN_NAME_LEN)?;
        check("avatar", &self.avatar, MAX_AVATAR_LEN)?;
        check("personality", &self.personality, MAX_PERSONALITY_LEN)
    }

    /// Takes every field `update` sets, keeping the others.
    pub(crate) fn merge(&mut self, update: &Identity) {
        if update.client_type.is_some() {
            self.client_type = update.client_type;
        }
        for (mine, theirs) in [
            (&mut self.screen_name, &update.screen_name),
            (&mut self.avatar, &update.avatar),
            (&mut self.personality, &update.personality),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
    }
}

/// Automatic reconnection: exponential backoff with jitter.
///
/// The n-th attempt (from 0) waits a random time in
/// `[d/2, d]` where `d = min(max_delay, initial_delay * 2^n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Whether to reconnect at all after the connection drops.
    pub enabled: bool,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Give up (and close the client) after this many failed attempts in a
    /// row; `None` = never.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// No reconnection: a dropped connection closes the client.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The delay before attempt `attempt` (0-based), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        let full = self
            .initial_delay
            .saturating_mul(factor)
            .min(self.max_delay);
        let half = full / 2;
        let jitter = rand::random_range(0.0..=1.0_f64);
        half + half.mul_f64(jitter)
    }
}

/// Which servers a `wss://` connection trusts.
#[derive(Clone)]
pub(crate) enum Tls {
    /// The operating system's root certificates (the default).
    SystemRoots,
    /// Only these root certificates.
    Roots(Vec<CertificateDer<'static>>),
    /// A complete rustls configuration, given by the caller or built from
    /// the roots once, when the client connects, so that every reconnect
    /// uses the same one.
    Config(Arc<rustls::ClientConfig>),
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tls::SystemRoots => f.write_str("SystemRoots"),
            Tls::Roots(roots) => write!(f, "Roots({} certificates)", roots.len()),
            Tls::Config(_) => f.write_str("Config"),
        }
    }
}

/// The ring provider, named explicitly rather than taken from (or
/// installed as) the process default. rustls 0.23.48 deprecates it for
/// lacking post-quantum key exchange; aws-lc-rs would need cmake to build.
#[allow(deprecated)]
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Everything [`Client::connect`](crate::Client::connect) needs.
///
/// ```
/// use std::time::Duration;
/// use arqon_client::{ClientType, ConnectOptions};
///
/// let options = ConnectOptions::new("ws://127.0.0.1:9100/")
///     .client_type(ClientType::Service)
///     .screen_name("indexer")
///     .token("s3cret")
///     .request_timeout(Duration::from_secs(2));
/// assert_eq!(options.url(), "ws://127.0.0.1:9100/");
/// ```
///
/// # TLS
///
/// A `wss://` URL connects with TLS (rustls; no OpenSSL). By default the
/// server's certificate must chain to one of the operating system's root
/// certificates. [`tls_roots`](Self::tls_roots) and
/// [`add_root_certificate_pem`](Self::add_root_certificate_pem) trust
/// given roots instead (a private CA, or a self-signed certificate), and
/// [`tls_config`](Self::tls_config) takes a complete rustls
/// configuration (client certificates, custom verification). The TLS
/// configuration is built once, when the client connects, and reconnects
/// use the same one.
///
/// ```
/// # fn run(ca_pem: &[u8]) -> Result<(), arqon_client::ClientError> {
/// use arqon_client::ConnectOptions;
///
/// let options = ConnectOptions::new("wss://bus.internal:9100/")
///     .add_root_certificate_pem(ca_pem)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) url: String,
    pub(crate) identity: Identity,
    pub(crate) token: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) local_addr: Option<IpAddr>,
    pub(crate) subscription_capacity: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) read_buffer_size: usize,
    pub(crate) tls: Tls,
    pub(crate) token_provider: Option<TokenProvider>,
    pub(crate) retry_first_connect: bool,
    pub(crate) refill_on_lag: bool,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("identity", &self.identity)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("reconnect", &self.reconnect)
            .field("local_addr", &self.local_addr)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("queue_capacity", &self.queue_capacity)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("tls", &self.tls)
            .field(
                "token_provider",
                &self.token_provider.as_ref().map(|_| "<fn>"),
            )
            .field("retry_first_connect", &self.retry_first_connect)
            .field("refill_on_lag", &self.refill_on_lag)
            .finish()
    }
}

impl ConnectOptions {
    /// Options for `url` (`ws://host:port/` or `ws://host:port/ws`, or
    /// `wss://…` for TLS); any query in `url` is kept and the identity
    /// parameters are appended.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            identity: Identity::default(),
            token: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            reconnect: ReconnectPolicy::default(),
            local_addr: None,
            subscription_capacity: 1024,
            queue_capacity: 1024,
            read_buffer_size: 16 * 1024,
            tls: Tls::SystemRoots,
            token_provider: None,
            retry_first_connect: false,
            refill_on_lag: false,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `client_type` query parameter (SPEC §2).
    #[must_use]
    pub fn client_type(mut self, kind: ClientType) -> Self {
        self.identity.client_type = Some(kind);
        self
    }

    /// `screen_name` query parameter (≤ 64 chars).
    #[must_use]
    pub fn screen_name(mut self, name: impl Into<String>) -> Self {
        self.identity.screen_name = Some(name.into());
        self
    }

    /// `avatar` query parameter (≤ 512 chars).
    #[must_use]
    pub fn avatar(mut self, avatar: impl Into<String>) -> Self {
        self.identity.avatar = Some(avatar.into());
        self
    }

    /// `personality` query parameter (≤ 256 chars).
    #[must_use]
    pub fn personality(mut self, personality: impl Into<String>) -> Self {
        self.identity.personality = Some(personality.into());
        self
    }

    /// A token (SPEC §9), sent as `Authorization: Bearer <token>`.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A callback that yields the token for each connection attempt: it is
    /// awaited before the first connect and before every reconnect, and
    /// its token is sent as `Authorization: Bearer <token>` (it replaces
    /// [`token`](Self::token)). Use it to refresh short-lived JWTs.
    ///
    /// When it fails during a reconnect, the attempt counts as failed and
    /// the next one (after the backoff) calls it again; when it fails
    /// before the first connection, [`Client::connect`](crate::Client::connect)
    /// returns [`ClientError::Token`] (unless
    /// [`retry_first_connect`](Self::retry_first_connect) is set).
    ///
    /// ```
    /// use arqon_client::ConnectOptions;
    ///
    /// async fn fetch_token() -> Result<String, std::io::Error> {
    ///     Ok("fresh-jwt".to_owned())
    /// }
    ///
    /// let options = ConnectOptions::new("ws://127.0.0.1:9100/").token_provider(fetch_token);
    /// ```
    #[must_use]
    pub fn token_provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let provider = Arc::new(provider);
        self.token_provider = Some(Arc::new(move || {
            let future = provider();
            Box::pin(async move { future.await.map_err(|e| TokenError(Box::new(e))) })
        }));
        self
    }

    /// Whether the first connection is retried like a reconnect (same
    /// [`ReconnectPolicy`] backoff and `max_attempts`) instead of failing
    /// [`Client::connect`](crate::Client::connect) at once. Default
    /// `false`. Permanent refusals (HTTP 400, 401, 403) are never
    /// retried.
    #[must_use]
    pub fn retry_first_connect(mut self, retry: bool) -> Self {
        self.retry_first_connect = retry;
        self
    }

    /// Whether a `lagged` notice (SPEC §16: the server dropped messages
    /// for this slow client) makes the client fetch what was dropped with
    /// `history after_seq`, from the notice's `first_dropped_seq` up to the
    /// channel's `last_seq` as the history reply names it. Each dropped
    /// message is then delivered once (deduplicated by `seq`), marked
    /// `replayed`, after the [`SubscriptionEvent::Lagged`](crate::SubscriptionEvent::Lagged)
    /// event — possibly after live messages that overtook it. Messages no
    /// longer in history stay lost. Default `false`: only the event.
    #[must_use]
    pub fn refill_on_lag(mut self, refill: bool) -> Self {
        self.refill_on_lag = refill;
        self
    }

    /// Time allowed for TCP connect, handshake and the welcome frame.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for each command or acknowledged publish, unless a
    /// handle from [`Client::with_timeout`](crate::Client::with_timeout)
    /// overrides it.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    #[must_use]
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Binds the client socket to this local address before connecting
    /// (to spread many connections over `127.0.0.x` source addresses).
    #[must_use]
    pub fn local_addr(mut self, addr: IpAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// Capacity of each [`Subscription`](crate::Subscription)'s queue and
    /// of the direct-message queue. When a subscription's queue is full the
    /// client stops reading the socket until it has room (backpressure).
    #[must_use]
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity.max(1);
        self
    }

    /// Capacity of the queue from the [`Client`](crate::Client) handles to
    /// the connection task.
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// WebSocket read buffer (allocated per connection; small saves memory
    /// when holding many idle connections).
    #[must_use]
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes.max(256);
        self
    }

    /// For `wss://`: trust only these root certificates (DER), instead of
    /// the operating system's.
    #[must_use]
    pub fn tls_roots(mut self, roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Self {
        self.tls = Tls::Roots(roots.into_iter().collect());
        self
    }

    /// For `wss://`: trust the certificates in `pem` (one or more
    /// `-----BEGIN CERTIFICATE-----` sections), in addition to roots given
    /// earlier this way or with [`tls_roots`](Self::tls_roots), and instead
    /// of the operating system's roots.
    ///
    /// Fails with [`ClientError::InvalidOption`] when `pem` holds no
    /// certificate.
    pub fn add_root_certificate_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::InvalidOption {
            name: "root_certificate",
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        if certs.is_empty() {
            return Err(invalid("no PEM certificate found".to_owned()));
        }
        match &mut self.tls {
            Tls::Roots(roots) => roots.extend(certs),
            tls => *tls = Tls::Roots(certs),
        }
        Ok(self)
    }

    /// For `wss://`: a complete rustls client configuration, used as is.
    #[must_use]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Tls::Config(config);
        self
    }

    /// Whether the URL asks for TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.url
            .get(..6)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"))
    }

    /// The options with the TLS configuration built (for a `wss://` URL),
    /// so that the first connection and every reconnect share it.
    pub(crate) fn resolve_tls(mut self) -> Result<Self, ClientError> {
        if !self.is_tls() {
            return Ok(self);
        }
        let roots = match &self.tls {
            Tls::Config(_) => return Ok(self),
            Tls::Roots(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for root in roots {
                    store.add(root.clone()).map_err(|e| ClientError::Tls {
                        reason: format!("unusable root certificate: {e}"),
                    })?;
                }
                store
            }
            Tls::SystemRoots => system_roots()?,
        };
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls {
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        self.tls = Tls::Config(Arc::new(config));
        Ok(self)
    }

    /// The TLS configuration, once [resolved](Self::resolve_tls).
    pub(crate) fn tls_client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        match &self.tls {
            Tls::Config(config) => Some(config.clone()),
            _ => None,
        }
    }

    /// The token for the next connection attempt: the provider's, or the
    /// fixed one.
    pub(crate) async fn current_token(&self) -> Result<Option<String>, ClientError> {
        match &self.token_provider {
            Some(provider) => Ok(Some(provider().await.map_err(ClientError::Token)?)),
            None => Ok(self.token.clone()),
        }
    }

    /// The handshake request with the options' own identity and token.
    #[cfg(test)]
    pub(crate) fn request(&self) -> Result<Request, ClientError> {
        self.request_with(&self.identity, self.token.as_deref())
    }

    /// The handshake request: URL with the identity query parameters, and
    /// the `Authorization` header.
    pub(crate) fn request_with(
        &self,
        identity: &Identity,
        token: Option<&str>,
    ) -> Result<Request, ClientError> {
        identity.validate()?;
        let mut params = Vec::new();
        if let Some(kind) = identity.client_type {
            params.push(("client_type", kind.as_str().to_owned()));
        }
        for (name, value) in [
            ("screen_name", &identity.screen_name),
            ("avatar", &identity.avatar),
            ("personality", &identity.personality),
        ] {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        let mut url = self.url.clone();
        for (i, (name, value)) in params.iter().enumerate() {
            let sep = if i == 0 && !url.contains('?') {
                '?'
            } else {
                '&'
            };
            url.push(sep);
            url.push_str(name);
            url.push('=');
            url.push_str(&percent_encode(value));
        }
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: self.url.clone(),
            reason,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| invalid(e.to_string()))?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::InvalidOption {
                    name: "token",
                    reason: "not a valid header value".to_owned(),
                }
            })?;
            request.headers_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// The operating system's root certificates; an error when none loads.
fn system_roots() -> Result<rustls::RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(ClientError::Tls {
            reason: format!(
                "no usable system root certificates ({} errors loading them)",
                found.errors.len()
            ),
        });
    }
    Ok(store)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_encoded() {
        let request = ConnectOptions::new("ws://127.0.0.1:9/ws")
            .client_type(ClientType::AiAgent)
            .screen_name("Ada L.")
            .personality("curious & kind")
            .token("t0k")
            .request()
            .expect("valid");
        assert_eq!(
            request.uri().to_string(),
            "ws://127.0.0.1:9/ws?client_type=ai-agent&screen_name=Ada%20L.&personality=curious%20%26%20kind"
        );
        assert_eq!(request.headers()["authorization"], "Bearer t0k");
    }

    #[test]
    fn limits_are_checked_before_connecting() {
        let err = ConnectOptions::new("ws://127.0.0.1:9/")
            .screen_name("x".repeat(65))
            .request()
            .expect_err("too long");
        assert!(matches!(
            err,
            ClientError::InvalidOption {
                name: "screen_name",
                ..
            }
        ));
        assert!(ConnectOptions::new("not a url").request().is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..ReconnectPolicy::default()
        };
        for attempt in 0..40 {
            let d = policy.delay(attempt);
            let full = Duration::from_millis(100)
                .saturating_mul(2u32.saturating_pow(attempt.min(30)))
                .min(Duration::from_secs(1));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn tls_options() {
        let options = ConnectOptions::new("WSS://localhost:9/");
        assert!(options.is_tls());
        assert!(!ConnectOptions::new("ws://localhost:9/").is_tls());
        let err = options
            .clone()
            .add_root_certificate_pem(b"not a certificate")
            .expect_err("no certificate");
        assert!(matches!(
            err,
            ClientError::InvalidOption {
                name: "root_certificate",
                ..
            }
        ));
        let resolved = options
            .tls_roots(Vec::new())
            .resolve_tls()
            .expect("an empty root store is a valid (if useless) configuration");
        assert!(resolved.tls_client_config().is_some());
    }

    #[test]
    fn debug_hides_the_token() {
        let text = format!("{:?}", ConnectOptions::new("ws://x/").token("secret"));
        assert!(!text.contains("secret"), "{text}");
    }
}
