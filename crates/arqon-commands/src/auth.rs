//! Authentication at the upgrade and the identity it yields (SPEC §9).
//!
//! - `none`: anyone connects; loopback peers are admins, others users.
//! - `token`: the admin token (compared in constant time) makes an admin,
//!   no token a user, any other token is refused.
//! - `jwt`: an HS256 token signed with the configured secret, with `exp`,
//!   is required; its claims give the client id (`sub`), the role, an
//!   optional `client_type`/`screen_name`, and the allowed channels.
//!
//! Secrets and tokens never appear in errors, logs or `Debug` output.

use std::net::SocketAddr;

use arqon_config::{AuthConfig, AuthMode};
use arqon_protocol::{
    ChannelPattern, ClientId, ClientType, MAX_SCREEN_NAME_LEN, SERVER_SENDER, check_profile_text,
    is_valid_client_id,
};
use arqon_routing::Role;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The client id a JWT's `sub` imposes; `None` lets the server assign one.
    pub client_id: Option<ClientId>,
    pub role: Role,
    pub client_type: Option<ClientType>,
    pub screen_name: Option<String>,
    /// Allowed `room:channel` patterns; `None` allows every channel.
    pub channels: Option<Vec<ChannelPattern>>,
}

impl Identity {
    fn with_role(role: Role) -> Self {
        Self {
            client_id: None,
            role,
            client_type: None,
            screen_name: None,
            channels: None,
        }
    }
}

/// Why a connection is refused with HTTP 401. The text names the problem,
/// never the token or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("a token is required")]
    MissingToken,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("the token has expired")]
    Expired,
    #[error("the token's claim {claim} is invalid")]
    InvalidClaim { claim: &'static str },
    /// A valid credential, but not an admin's, where only admins are let in
    /// (the telemetry listener in token and jwt modes).
    #[error("admin credentials are required")]
    AdminRequired,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    client_type: Option<String>,
    #[serde(default)]
    screen_name: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

/// Whether `given` is the HTTP API key (SPEC §17), compared in constant
/// time. `None` when the API is disabled (no key configured).
pub fn api_key_matches(config: &AuthConfig, given: &str) -> Option<bool> {
    let key = config.api_key.as_ref()?;
    Some(bool::from(given.as_bytes().ct_eq(key.expose().as_bytes())))
}

/// Authenticates a connection from `peer` that presented `token`.
pub fn authenticate(
    config: &AuthConfig,
    peer: SocketAddr,
    token: Option<&str>,
) -> Result<Identity, AuthError> {
    match config.mode {
        AuthMode::None => Ok(Identity::with_role(if peer.ip().is_loopback() {
            Role::Admin
        } else {
            Role::User
        })),
        AuthMode::Token => match (token, &config.admin_token) {
            (None, _) => Ok(Identity::with_role(Role::User)),
            (Some(given), Some(admin))
                if bool::from(given.as_bytes().ct_eq(admin.expose().as_bytes())) =>
            {
                Ok(Identity::with_role(Role::Admin))
            }
            (Some(_), _) => Err(AuthError::InvalidToken),
        },
        AuthMode::Jwt => {
            let token = token.ok_or(AuthError::MissingToken)?;
            let secret = config.jwt_secret.as_ref().ok_or(AuthError::InvalidToken)?;
            verify_jwt(token, secret.expose().as_bytes())
        }
    }
}

fn verify_jwt(token: &str, secret: &[u8]) -> Result<Identity, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    // A token that is not valid yet is not valid (SPEC §18).
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::InvalidToken,
            })?
            .claims;

    // Ids starting with `arqonbus` are the server's own (SPEC §18): a
    // client holding one could pass its messages off as the server's.
    if !is_valid_client_id(&claims.sub) || claims.sub.starts_with(SERVER_SENDER) {
        return Err(AuthError::InvalidClaim { claim: "sub" });
    }
    let client_id =
        ClientId::new(&claims.sub).map_err(|_| AuthError::InvalidClaim { claim: "sub" })?;
    let role = match claims.role.as_deref() {
        None | Some("user") => Role::User,
        Some("admin") => Role::Admin,
        Some(_) => return Err(AuthError::InvalidClaim { claim: "role" }),
    };
    let client_type = claims
        .client_type
        .map(|kind| kind.parse::<ClientType>())
        .transpose()
        .map_err(|_| AuthError::InvalidClaim {
            claim: "client_type",
        })?;
    if claims
        .screen_name
        .as_deref()
        .is_some_and(|name| check_profile_text(name, MAX_SCREEN_NAME_LEN).is_err())
    {
        return Err(AuthError::InvalidClaim {
            claim: "screen_name",
        });
    }
    let channels = claims
        .channels
        .map(|patterns| {
            patterns
                .iter()
                .map(|pattern| ChannelPattern::parse(pattern))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|_| AuthError::InvalidClaim { claim: "channels" })?;
    Ok(Identity {
        client_id: Some(client_id),
        role,
        client_type,
        screen_name: claims.screen_name,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use arqon_config::Secret;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;

    const SECRET: &str = "test-secret-of-some-length";

    fn jwt_config() -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Jwt,
            jwt_secret: Some(Secret::new(SECRET)),
            ..AuthConfig::default()
        }
    }

    fn now() -> i64 {
        arqon_protocol::now().timestamp()
    }

    fn sign(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    fn local() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 5000))
    }

    fn remote() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(203, 0, 113, 7), 5000))
    }

    #[test]
    fn none_mode_makes_loopback_peers_admins() {
        let config = AuthConfig::default();
        assert_eq!(
            authenticate(&config, local(), None).expect("ok").role,
            Role::Admin
        );
        assert_eq!(
            authenticate(&config, remote(), None).expect("ok").role,
            Role::User
        );
        assert_eq!(
            authenticate(&config, remote(), Some("whatever"))
                .expect("ok")
                .role,
            Role::User
        );
    }

    #[test]
    fn token_mode_checks_the_admin_token() {
        let config = AuthConfig {
            mode: AuthMode::Token,
            admin_token: Some(Secret::new("s3cret")),
            ..AuthConfig::default()
        };
        assert_eq!(
            authenticate(&config, remote(), Some("s3cret"))
                .expect("ok")
                .role,
            Role::Admin
        );
        assert_eq!(
            authenticate(&config, local(), None).expect("ok").role,
            Role::User
        );
        assert_eq!(
            authenticate(&config, remote(), Some("s3cre")),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            authenticate(&config, remote(), Some("s3cret!")),
            Err(AuthError::InvalidToken)
        );
        // An empty token is an invalid token, not "no token" (SPEC §18).
        assert_eq!(
            authenticate(&config, remote(), Some("")),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn a_valid_jwt_gives_its_claims() {
        let token = sign(
            json!({"sub": "user@example.com", "exp": now() + 600, "role": "admin", "client_type": "ai-agent",
                   "screen_name": "Ada", "channels": ["science:*", "*:public"]}),
            SECRET,
        );
        let identity = authenticate(&jwt_config(), remote(), Some(&token)).expect("valid");
        assert_eq!(
            identity.client_id.as_ref().map(ClientId::as_str),
            Some("user@example.com")
        );
        assert_eq!(identity.role, Role::Admin);
        assert_eq!(identity.client_type, Some(ClientType::AiAgent));
        assert_eq!(identity.screen_name.as_deref(), Some("Ada"));
        assert_eq!(identity.channels.map(|c| c.len()), Some(2));

        let plain = sign(json!({"sub": "u1", "exp": now() + 600}), SECRET);
        let identity = authenticate(&jwt_config(), remote(), Some(&plain)).expect("valid");
        assert_eq!((identity.role, identity.channels), (Role::User, None));
    }

    #[test]
    fn bad_jwts_are_refused() {
        let config = jwt_config();
        let expired = sign(json!({"sub": "u1", "exp": now() - 5}), SECRET);
        assert_eq!(
            authenticate(&config, local(), Some(&expired)),
            Err(AuthError::Expired)
        );
        let wrong_key = sign(json!({"sub": "u1", "exp": now() + 600}), "another-secret");
        assert_eq!(
            authenticate(&config, local(), Some(&wrong_key)),
            Err(AuthError::InvalidToken)
        );
        let no_exp = sign(json!({"sub": "u1"}), SECRET);
        assert_eq!(
            authenticate(&config, local(), Some(&no_exp)),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            authenticate(&config, local(), None),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            authenticate(&config, local(), Some("")),
            Err(AuthError::InvalidToken)
        );
        let not_yet = sign(
            json!({"sub": "u1", "exp": now() + 7200, "nbf": now() + 3600}),
            SECRET,
        );
        assert_eq!(
            authenticate(&config, local(), Some(&not_yet)),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            authenticate(&config, local(), Some("not.a.jwt")),
            Err(AuthError::InvalidToken)
        );
        let cases = [
            (json!({"sub": "has space", "exp": now() + 600}), "sub"),
            (json!({"sub": "x".repeat(129), "exp": now() + 600}), "sub"),
            (
                json!({"sub": "u1", "exp": now() + 600, "role": "root"}),
                "role",
            ),
            (
                json!({"sub": "u1", "exp": now() + 600, "client_type": "robot"}),
                "client_type",
            ),
            (
                json!({"sub": "u1", "exp": now() + 600, "channels": ["sci*:x"]}),
                "channels",
            ),
            (
                json!({"sub": "u1", "exp": now() + 600, "channels": ["nocolon"]}),
                "channels",
            ),
            (json!({"sub": "arqonbus", "exp": now() + 600}), "sub"),
            (json!({"sub": "arqonbus-admin", "exp": now() + 600}), "sub"),
            (
                json!({"sub": "u1", "exp": now() + 600, "screen_name": "a\u{202E}b"}),
                "screen_name",
            ),
        ];
        for (claims, claim) in cases {
            let token = sign(claims.clone(), SECRET);
            assert_eq!(
                authenticate(&config, local(), Some(&token)),
                Err(AuthError::InvalidClaim { claim }),
                "{claims}"
            );
        }
        let other_alg = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "u1", "exp": now() + 600}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign");
        assert_eq!(
            authenticate(&config, local(), Some(&other_alg)),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn errors_never_contain_the_token_or_secret() {
        let token = sign(json!({"sub": "u1", "exp": now() - 5}), SECRET);
        let err = authenticate(&jwt_config(), local(), Some(&token)).expect_err("expired");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&token) && !shown.contains(SECRET));
        assert!(!format!("{:?}", jwt_config()).contains(SECRET));
    }
}
