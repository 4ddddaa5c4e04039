//! Who is calling, and what they may do (SPEC §6).
//!
//! Bearer tokens are configured per principal with a role: `bot:<id>`,
//! `probe:<id>` or `operator`. The router keeps only their SHA-256 digests;
//! a token comes from the config as a digest, or from a file or environment
//! variable, and is never logged. The interceptor answers `UNAUTHENTICATED`
//! for a missing or unknown token and rate-limits each principal; each RPC
//! then checks the role against what the call claims (`source_bot`, the
//! report's bot, …) and answers `PERMISSION_DENIED` — before touching any
//! state, so neither answer tells whether a contact exists.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// The `[auth]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub principals: Vec<PrincipalConfig>,
    /// Listen on a non-loopback address with no tokens configured.
    pub insecure_allow_remote: bool,
}

/// One principal: a role and where its token comes from (exactly one of the three).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// `bot:<id>`, `probe:<id>` or `operator`.
    pub role: String,
    /// Hex SHA-256 digest of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// A file holding the token (e.g. a mounted secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    Bot(String),
    Probe(String),
    Operator,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("bot", id)) if !id.is_empty() => Some(Role::Bot(id.to_owned())),
            Some(("probe", id)) if !id.is_empty() => Some(Role::Probe(id.to_owned())),
            None if text == "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Role::Bot(id) => format!("bot:{id}"),
            Role::Probe(id) => format!("probe:{id}"),
            Role::Operator => "operator".into(),
        }
    }
}

/// Who made a call, put into the request's extensions by the interceptor.
/// `Open` when no tokens are configured: every call is allowed.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    Open,
    As(Role),
}

/// The rate limit per principal: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Whose calls a bucket counts: a configured principal, or a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BucketKey {
    Principal(usize),
    Address(Option<std::net::IpAddr>),
}

/// The configured tokens and the per-principal rate limiter.
pub struct Auth {
    tokens: HashMap<[u8; 32], (usize, Role)>,
    rate: Option<RateLimit>,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// Reads every principal's token; errors name the principal, never the token.
    pub fn from_config(config: &AuthConfig, rate: Option<RateLimit>) -> anyhow::Result<Self> {
        let mut tokens = HashMap::new();
        for (i, p) in config.principals.iter().enumerate() {
            let key = format!("auth.principals[{i}]");
            let role = Role::parse(&p.role).with_context(|| {
                format!(
                    "{key}.role '{}' must be bot:<id>, probe:<id> or operator",
                    p.role
                )
            })?;
            let sources = [
                p.token_sha256.is_some(),
                p.token_file.is_some(),
                p.token_env.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                bail!(
                    "{key} ({}) needs exactly one of token_sha256, token_file, token_env",
                    p.role
                );
            }
            let hash = if let Some(hex) = &p.token_sha256 {
                parse_hex(hex)
                    .with_context(|| format!("{key}.token_sha256 must be 64 hex digits"))?
            } else if let Some(path) = &p.token_file {
                let token = std::fs::read_to_string(path)
                    .with_context(|| format!("{key}.token_file: cannot read {}", path.display()))?;
                if token.trim().is_empty() {
                    bail!("{key}.token_file {} is empty", path.display());
                }
                digest(&token)
            } else {
                let var = p.token_env.as_deref().unwrap_or_default();
                let token = std::env::var(var)
                    .with_context(|| format!("{key}.token_env: ${var} is not set"))?;
                if token.trim().is_empty() {
                    bail!("{key}.token_env: ${var} is empty");
                }
                digest(&token)
            };
            if tokens.insert(hash, (i, role)).is_some() {
                bail!("{key}: the same token is configured twice");
            }
        }
        Ok(Self {
            tokens,
            rate,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The interceptor: identifies the caller and applies its rate limit.
    pub fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let (caller, key) = if self.enabled() {
            let token = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .ok_or_else(|| Status::unauthenticated("missing or invalid token"))?;
            let (index, role) = self
                .tokens
                .get(&digest(token))
                .ok_or_else(|| Status::unauthenticated("missing or invalid token"))?;
            (Caller::As(role.clone()), BucketKey::Principal(*index))
        } else {
            (
                Caller::Open,
                BucketKey::Address(request.remote_addr().map(|a| a.ip())),
            )
        };
        if let Some(rate) = self.rate {
            self.take(key, rate, &caller)?;
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }

    fn take(&self, key: BucketKey, rate: RateLimit, caller: &Caller) -> Result<(), Status> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(rate.burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let who = match (caller, key) {
                (Caller::As(role), _) => role.describe(),
                (Caller::Open, BucketKey::Address(Some(ip))) => ip.to_string(),
                _ => "this client".into(),
            };
            return Err(Status::resource_exhausted(format!(
                "rate limit of {} calls/s exceeded for '{who}'",
                rate.per_second
            )));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

/// The interceptor as tonic wants it.
#[derive(Clone)]
pub struct Interceptor(pub Arc<Auth>);

impl tonic::service::Interceptor for Interceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check(request)
    }
}

/// Who made the call; without the interceptor (in-process use) it is open.
pub fn caller<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Open)
}

fn denied(caller: &Role, wanted: &str) -> Status {
    Status::permission_denied(format!("a {} token cannot {wanted}", caller.describe()))
}

/// The call acts as bot `bot`.
pub fn as_bot(caller: &Caller, bot: &str) -> Result<(), Status> {
    match caller.clone() {
        Caller::Open => Ok(()),
        Caller::As(Role::Bot(id)) if id == bot => Ok(()),
        Caller::As(role) => Err(denied(&role, &format!("act as bot '{bot}'"))),
    }
}

/// The call needs some bot's token (or an operator's).
pub fn any_bot(caller: &Caller) -> Result<(), Status> {
    match caller.clone() {
        Caller::Open | Caller::As(Role::Bot(_)) | Caller::As(Role::Operator) => Ok(()),
        Caller::As(role) => Err(denied(&role, "call the handoff service")),
    }
}

/// The call reports for bot `bot`'s probe.
pub fn as_probe(caller: &Caller, bot: &str) -> Result<(), Status> {
    match caller.clone() {
        Caller::Open => Ok(()),
        Caller::As(Role::Probe(id)) if id == bot => Ok(()),
        Caller::As(role) => Err(denied(&role, &format!("report health for '{bot}'"))),
    }
}

/// The call needs an operator.
pub fn operator(caller: &Caller) -> Result<(), Status> {
    match caller.clone() {
        Caller::Open | Caller::As(Role::Operator) => Ok(()),
        Caller::As(role) => Err(denied(&role, "use the admin service")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(rate: Option<RateLimit>) -> Auth {
        let config = AuthConfig {
            principals: vec![PrincipalConfig {
                role: "bot:lead".into(),
                token_sha256: Some(hex(&digest("lead-secret"))),
                ..Default::default()
            }],
            insecure_allow_remote: false,
        };
        Auth::from_config(&config, rate).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn call(auth: &Auth, token: Option<&str>) -> Result<Caller, Status> {
        let mut request = Request::new(());
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        auth.check(request)
            .map(|r| r.extensions().get::<Caller>().cloned().unwrap())
    }

    #[test]
    fn tokens_map_to_roles_and_others_are_unauthenticated() {
        let auth = auth(None);
        assert_eq!(
            call(&auth, Some("lead-secret")).unwrap(),
            Caller::As(Role::Bot("lead".into()))
        );
        assert_eq!(
            call(&auth, Some("wrong")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            call(&auth, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_principal_over_its_rate_is_refused() {
        let auth = auth(Some(RateLimit {
            per_second: 0.001,
            burst: 3.0,
        }));
        for _ in 0..3 {
            call(&auth, Some("lead-secret")).unwrap();
        }
        assert_eq!(
            call(&auth, Some("lead-secret")).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }

    #[test]
    fn bad_principals_are_named() {
        let bad = |p: PrincipalConfig| {
            let config = AuthConfig {
                principals: vec![p],
                insecure_allow_remote: false,
            };
            Auth::from_config(&config, None)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        let role = bad(PrincipalConfig {
            role: "admin".into(),
            token_env: Some("X".into()),
            ..Default::default()
        });
        assert!(role.contains("auth.principals[0].role"), "{role}");
        let none = bad(PrincipalConfig {
            role: "operator".into(),
            ..Default::default()
        });
        assert!(none.contains("exactly one"), "{none}");
        let hash = bad(PrincipalConfig {
            role: "operator".into(),
            token_sha256: Some("abc".into()),
            ..Default::default()
        });
        assert!(hash.contains("64 hex digits"), "{hash}");
        let env = bad(PrincipalConfig {
            role: "operator".into(),
            token_env: Some("BATON_TEST_SURELY_UNSET".into()),
            ..Default::default()
        });
        assert!(env.contains("BATON_TEST_SURELY_UNSET"), "{env}");
    }
}
