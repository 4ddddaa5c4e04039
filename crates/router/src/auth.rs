//! Who is calling, and what they may do (SPEC §6).
//!
//! Bearer tokens are configured per principal with a role: `bot:<id>`,
//! `probe:<id>` or `operator`. The router keeps only their SHA-256 digests;
//! a token comes from the config as a digest, or from a file or environment
//! variable, and is never logged. The auth layer ([`Auth::admit`]) answers
//! `UNAUTHENTICATED` for a missing or unknown token, `RESOURCE_EXHAUSTED`
//! to an address that failed too often and to a principal over its call
//! rate; each RPC
//! then checks the role against what the call claims (`source_bot`, the
//! report's bot, …) and answers `PERMISSION_DENIED` — before touching any
//! state, so neither answer tells whether a contact exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, bail};
use baton_policy::ConfigError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Request;

use crate::error::EngineError;

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

impl AuthConfig {
    /// Checks every principal's role at start: one that cannot be parsed, or
    /// names a bot that is not configured (`bot:ghost`), would otherwise
    /// hold a token that nothing ever accepts.
    pub fn check_roles(&self, policy: &baton_policy::Config) -> Result<(), ConfigError> {
        for (i, p) in self.principals.iter().enumerate() {
            let problem = match Role::parse(&p.role) {
                None => format!(
                    "'{}' must be bot:<id>, probe:<id> or operator",
                    crate::convert::echo(&p.role)
                ),
                Some(Role::Bot(id) | Role::Probe(id)) if policy.bot(&id).is_none() => {
                    format!("'{}' names a bot that is not configured", p.role)
                }
                Some(_) => continue,
            };
            return Err(ConfigError::Invalid {
                key: format!("auth.principals[{i}].role"),
                problem,
            });
        }
        Ok(())
    }
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

/// Who made a call, put into the request's extensions by the auth layer.
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
    Address(Option<IpAddr>),
}

/// The limit on failed authentications per client address: a bucket of
/// `per_minute` tries, refilled at `per_minute` a minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureLimit {
    pub per_minute: u32,
}

/// One address's remaining tries.
struct FailureBucket {
    tries: f64,
    at: Instant,
    /// When going over the limit was last logged.
    warned: Option<Instant>,
}

impl FailureBucket {
    fn refill(&mut self, now: Instant, limit: FailureLimit) -> f64 {
        let per_minute = f64::from(limit.per_minute);
        let earned = now.duration_since(self.at).as_secs_f64() * per_minute / 60.0;
        self.tries = (self.tries + earned).min(per_minute);
        self.at = now;
        self.tries
    }
}

/// Addresses whose failures are remembered before the fully refilled ones
/// are forgotten: bounds the memory a scan from many addresses can take.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// The configured tokens, the per-principal rate limiter and the
/// failed-authentication limiter.
pub struct Auth {
    tokens: HashMap<[u8; 32], (usize, Role)>,
    rate: Option<RateLimit>,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    failure_limit: Option<FailureLimit>,
    failures: Mutex<HashMap<IpAddr, FailureBucket>>,
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
            failure_limit: None,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Refuses an address for a while once it failed authentication
    /// `limit.per_minute` times in a row within a minute.
    pub fn with_failure_limit(mut self, limit: Option<FailureLimit>) -> Self {
        self.failure_limit = limit;
        self
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token check, run by [`crate::server`]'s auth layer for every
    /// Baton call: identifies the caller from its `authorization` header
    /// and applies the failed-authentication limit of its address
    /// (`peer`) and the call rate of the principal.
    pub fn admit(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Caller, EngineError> {
        let (caller, key) = if self.enabled() {
            if let (Some(limit), Some(ip)) = (self.failure_limit, peer)
                && self.over_failure_limit(ip, limit)
            {
                return Err(EngineError::Exhausted(
                    "too many failed authentications from this address; try again later".into(),
                ));
            }
            let role = authorization
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .and_then(|token| self.tokens.get(&digest(token)));
            let Some((index, role)) = role else {
                if let (Some(limit), Some(ip)) = (self.failure_limit, peer) {
                    self.failed(ip, limit);
                }
                return Err(EngineError::Unauthenticated(
                    "missing or invalid token".into(),
                ));
            };
            (Caller::As(role.clone()), BucketKey::Principal(*index))
        } else {
            (Caller::Open, BucketKey::Address(peer))
        };
        if let Some(rate) = self.rate {
            self.take(key, rate, &caller)?;
        }
        Ok(caller)
    }

    /// Whether `ip` has used up its failed authentications: it is then
    /// refused before its token is even looked at, so guessing stops paying.
    fn over_failure_limit(&self, ip: IpAddr, limit: FailureLimit) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get_mut(&ip)
            .is_some_and(|b| b.refill(Instant::now(), limit) < 1.0)
    }

    /// Counts one failed authentication from `ip`; logs, at most once per
    /// minute per address, when the address goes over its limit.
    fn failed(&self, ip: IpAddr, limit: FailureLimit) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            // Forget the addresses that have earned all their tries back.
            failures.retain(|_, b| b.refill(now, limit) < f64::from(limit.per_minute));
        }
        let bucket = failures.entry(ip).or_insert(FailureBucket {
            tries: f64::from(limit.per_minute),
            at: now,
            warned: None,
        });
        bucket.refill(now, limit);
        bucket.tries -= 1.0;
        tracing::debug!(peer = %ip, "failed authentication");
        if bucket.tries < 1.0
            && bucket
                .warned
                .is_none_or(|w| now.duration_since(w).as_secs() >= 60)
        {
            bucket.warned = Some(now);
            tracing::warn!(peer = %ip, limit_per_minute = limit.per_minute,
                "too many failed authentications: refusing this address for a while");
        }
    }

    fn take(&self, key: BucketKey, rate: RateLimit, caller: &Caller) -> Result<(), EngineError> {
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
            return Err(EngineError::Exhausted(format!(
                "rate limit of {} calls/s exceeded for '{who}'",
                rate.per_second
            )));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

/// Who made the call; without the auth layer (in-process use) it is open.
pub fn caller<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Open)
}

fn denied(caller: &Role, wanted: &str) -> EngineError {
    EngineError::PermissionDenied(format!("a {} token cannot {wanted}", caller.describe()))
}

/// The call acts as bot `bot`.
pub fn as_bot(caller: &Caller, bot: &str) -> Result<(), EngineError> {
    match caller.clone() {
        Caller::Open => Ok(()),
        Caller::As(Role::Bot(id)) if id == bot => Ok(()),
        Caller::As(role) => Err(denied(
            &role,
            &format!("act as bot '{}'", crate::convert::echo(bot)),
        )),
    }
}

/// The call needs some bot's token (or an operator's).
pub fn any_bot(caller: &Caller) -> Result<(), EngineError> {
    match caller.clone() {
        Caller::Open | Caller::As(Role::Bot(_)) | Caller::As(Role::Operator) => Ok(()),
        Caller::As(role) => Err(denied(&role, "call the handoff service")),
    }
}

/// The call reports for bot `bot`'s probe.
pub fn as_probe(caller: &Caller, bot: &str) -> Result<(), EngineError> {
    match caller.clone() {
        Caller::Open => Ok(()),
        Caller::As(Role::Probe(id)) if id == bot => Ok(()),
        Caller::As(role) => Err(denied(
            &role,
            &format!("report health for '{}'", crate::convert::echo(bot)),
        )),
    }
}

/// The call needs an operator.
pub fn operator(caller: &Caller) -> Result<(), EngineError> {
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

    fn call(auth: &Auth, token: Option<&str>) -> Result<Caller, tonic::Status> {
        let header = token.map(|t| format!("Bearer {t}"));
        auth.admit(header.as_deref(), Some(IpAddr::from([192, 0, 2, 1])))
            .map_err(tonic::Status::from)
    }

    #[test]
    fn an_address_over_its_failures_is_refused_even_with_a_good_token() {
        let auth = auth(None).with_failure_limit(Some(FailureLimit { per_minute: 3 }));
        for _ in 0..3 {
            assert_eq!(
                call(&auth, Some("guess")).unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
        let refused = call(&auth, Some("lead-secret")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "too many failed authentications from this address; try again later"
        );
        // Another address is not affected, and good tokens do not count.
        let other = Some(IpAddr::from([192, 0, 2, 2]));
        for _ in 0..10 {
            assert_eq!(
                auth.admit(Some("Bearer lead-secret"), other).unwrap(),
                Caller::As(Role::Bot("lead".into()))
            );
        }
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

    #[test]
    fn roles_for_unknown_bots_are_refused_naming_the_key() {
        let policy = baton_policy::Config::default();
        let roles = |roles: &[&str]| AuthConfig {
            principals: roles
                .iter()
                .map(|r| PrincipalConfig {
                    role: (*r).into(),
                    token_env: Some("X".into()),
                    ..Default::default()
                })
                .collect(),
            insecure_allow_remote: false,
        };
        roles(&["bot:lead", "probe:buyer", "operator"])
            .check_roles(&policy)
            .unwrap();
        let cases = [
            (
                vec!["bot:lead", "bot:ghost"],
                "config key 'auth.principals[1].role' 'bot:ghost' names a bot that is not configured",
            ),
            (
                vec!["probe:ghost"],
                "config key 'auth.principals[0].role' 'probe:ghost' names a bot that is not configured",
            ),
            (
                vec!["admin"],
                "config key 'auth.principals[0].role' 'admin' must be bot:<id>, probe:<id> or operator",
            ),
        ];
        for (list, expected) in cases {
            let err = roles(&list).check_roles(&policy).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn a_refusal_echoes_a_short_prefix_of_the_claimed_bot() {
        let caller = Caller::As(Role::Bot("lead".into()));
        let claimed = "b".repeat(1 << 20);
        let status = tonic::Status::from(as_bot(&caller, &claimed).unwrap_err());
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            format!("a bot:lead token cannot act as bot '{}…'", "b".repeat(64))
        );
    }
}
