//! Identity: JWT verification and where tokens come from.
//!
//! The algorithm comes from configuration, never from the token. Tokens are
//! HS256/384/512 with a shared secret, or RS256/ES256 with a public key.
//! Tokens that SurrealDB issues for record access (claims `ID`, `AC`, `NS`,
//! `DB`) are accepted too, with `ID` as the user id, so an app that signs its
//! users in through SurrealDB can use those tokens directly.
//!
//! With no key configured, a random secret is generated and tokens signed
//! with it, an admin's and a user's, for local use. With a secret,
//! `livehub token` signs tokens with it ([`sign_token`]).

use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::HeaderMap;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value as Json, json};

use crate::config::{AuthSettings, TokenArgs};
use crate::identity::{AuthError, Identity};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;
/// How long the development tokens live.
const DEV_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Verifies tokens with the configured key and algorithm.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    /// Present when the key is a secret: used to sign development tokens.
    signer: Option<(EncodingKey, Algorithm)>,
    /// The `iss` and `aud` that tokens must carry, if configured: the
    /// tokens this server signs carry them too.
    issuer: Option<String>,
    audience: Option<String>,
}

/// The tokens a run without a configured key signs with its random secret.
#[derive(Debug, Clone)]
pub struct DevTokens {
    /// An admin's (`sub` "admin", `role` "admin").
    pub admin: String,
    /// A user's: `sub` "ann", `name` "Ann".
    pub user: String,
}

/// Why `livehub token` does not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Only a public key is configured.
    #[error(
        "livehub token signs with the secret the server verifies with: set --jwt-secret or \
         LIVEHUB_JWT_SECRET (a public key cannot sign)"
    )]
    PublicKey,
    /// No key is configured.
    #[error(
        "livehub token signs with the secret the server verifies with: set --jwt-secret or \
         LIVEHUB_JWT_SECRET.\n\
         A server started without one makes a random secret that exists only inside that process\n\
         (its banner prints tokens for it). Give the server and livehub token the same secret:\n\
         \n    export LIVEHUB_JWT_SECRET=$(openssl rand -hex 32)\n\n\
         and start both from this shell, or from others with the same value."
    )]
    NoSecret,
    /// The key settings are wrong (a short secret, an algorithm that does
    /// not fit it).
    #[error("{0:#}")]
    Settings(anyhow::Error),
}

/// The token `livehub token` prints: for `request`, signed with the
/// configured secret, so that a server with the same settings accepts it.
pub fn sign_token(settings: &AuthSettings, request: &TokenArgs) -> Result<String, SignError> {
    match (&settings.jwt_secret, &settings.jwt_public_key) {
        (None, Some(_)) => return Err(SignError::PublicKey),
        // Not `from_settings`' random secret: no server would accept it.
        (None, None) => return Err(SignError::NoSecret),
        (Some(_), _) => {}
    }
    let (authenticator, _) = Authenticator::from_settings(settings).map_err(SignError::Settings)?;
    let mut claims = json!({"sub": request.sub});
    if let Some(name) = &request.name {
        claims["name"] = json!(name);
    }
    if let Some(role) = &request.role {
        claims["role"] = json!(role);
    }
    authenticator
        .issue(claims, request.ttl)
        .map_err(SignError::Settings)
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// The authenticator the configuration asks for. With no key configured,
    /// a random secret, and tokens signed with it for local use.
    pub fn from_settings(
        config: &AuthSettings,
    ) -> anyhow::Result<(Authenticator, Option<DevTokens>)> {
        let algorithm = match config.jwt_algorithm.as_deref() {
            Some(name) => name
                .parse::<Algorithm>()
                .ok()
                .filter(|algorithm| {
                    matches!(
                        algorithm,
                        Algorithm::HS256
                            | Algorithm::HS384
                            | Algorithm::HS512
                            | Algorithm::RS256
                            | Algorithm::ES256
                    )
                })
                .with_context(|| {
                    format!("--jwt-algorithm {name}: use HS256, HS384, HS512, RS256 or ES256")
                })?,
            None if config.jwt_public_key.is_some() => Algorithm::RS256,
            None => Algorithm::HS256,
        };
        let hmac = matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        let (key, signer, dev) = match (&config.jwt_secret, &config.jwt_public_key) {
            (Some(_), Some(_)) => {
                bail!("configure either --jwt-secret or --jwt-public-key, not both")
            }
            (Some(secret), None) if hmac => {
                let secret = secret.expose().as_bytes();
                if secret.len() < 32 {
                    bail!("--jwt-secret must be at least 32 bytes long");
                }
                (
                    DecodingKey::from_secret(secret),
                    Some((EncodingKey::from_secret(secret), algorithm)),
                    false,
                )
            }
            (None, Some(pem)) if !hmac => {
                let pem = read_pem(pem)?;
                let key = match algorithm {
                    Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                    _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
                }
                .context("reading --jwt-public-key")?;
                (key, None, false)
            }
            (None, None) if hmac => {
                let secret: [u8; 32] = rand::random();
                (
                    DecodingKey::from_secret(&secret),
                    Some((EncodingKey::from_secret(&secret), algorithm)),
                    true,
                )
            }
            _ => bail!("--jwt-algorithm {algorithm:?} does not fit the configured key"),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.required_spec_claims.clear();
        if !config.jwt_allow_no_exp {
            validation.required_spec_claims.insert("exp".into());
        }
        // A configured `aud` or `iss` must be present, not just match when
        // it is there.
        match &config.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        let authenticator = Authenticator {
            key,
            validation,
            signer,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        };
        let dev_tokens = if dev {
            let admin = json!({"sub": "admin", "name": "Local admin", "role": "admin"});
            Some(DevTokens {
                admin: authenticator.issue(admin, DEV_TOKEN_LIFETIME)?,
                user: authenticator
                    .issue(json!({"sub": "ann", "name": "Ann"}), DEV_TOKEN_LIFETIME)?,
            })
        } else {
            None
        };
        Ok((authenticator, dev_tokens))
    }

    /// Signs a token this server accepts for `claims` (`sub` and the
    /// rest): issued now, expiring after `lifetime`, with the configured
    /// `iss` and `aud`.
    pub fn issue(&self, mut claims: Json, lifetime: Duration) -> anyhow::Result<String> {
        let now = crate::clock::unix_now();
        claims["iat"] = json!(now);
        claims["exp"] = json!(now + lifetime.as_secs());
        if let Some(issuer) = &self.issuer {
            claims["iss"] = json!(issuer);
        }
        if let Some(audience) = &self.audience {
            claims["aud"] = json!(audience);
        }
        self.sign(&claims)
    }

    /// Signs claims with the configured secret (development and tests).
    pub fn sign(&self, claims: &Json) -> anyhow::Result<String> {
        let (key, algorithm) = self
            .signer
            .as_ref()
            .context("this server verifies with a public key and cannot sign")?;
        Ok(jsonwebtoken::encode(&Header::new(*algorithm), claims, key)?)
    }

    /// Verifies a token and returns who it identifies.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        // Before anything reads them: a header or claims with a repeated key
        // mean different things to different parsers.
        for (part, name) in token.split('.').take(2).zip(["header", "claims"]) {
            let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| AuthError::Malformed("not a JWT this server can read".into()))?;
            if let Some(key) = repeated_key(&json) {
                return Err(AuthError::DuplicateKey(name, key));
            }
        }
        let data =
            jsonwebtoken::decode::<Json>(token, &self.key, &self.validation).map_err(|error| {
                match error.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidAlgorithmName => AuthError::BadSignature,
                    ErrorKind::InvalidAudience => AuthError::WrongAudience,
                    ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                    ErrorKind::MissingRequiredClaim(claim) => {
                        AuthError::Malformed(format!("claim `{claim}` is missing"))
                    }
                    _ => AuthError::Malformed("not a JWT this server can read".into()),
                }
            })?;
        let iat = data.claims.get("iat");
        if iat.is_some_and(|iat| !iat.as_f64().is_some_and(|iat| iat >= 0.0)) {
            return Err(AuthError::Malformed(
                "claim `iat` must be a number of seconds since 1970".into(),
            ));
        }
        let identity = Identity::from_claims(data.claims)?;
        // A sign-out refuses the tokens issued up to it, so one issued
        // "later" than this server's now would escape every sign-out: it is
        // refused beyond the clock leeway.
        let now = crate::clock::unix_now();
        if identity
            .issued_at
            .is_some_and(|issued_at| issued_at > now.saturating_add(LEEWAY_SECS))
        {
            return Err(AuthError::IssuedInFuture(LEEWAY_SECS));
        }
        Ok(identity)
    }
}

/// The first key that an object of `json` holds twice, at any depth.
/// serde_json keeps the last of repeated keys and other parsers the first,
/// so claims with one are ambiguous.
fn repeated_key(json: &[u8]) -> Option<String> {
    use std::cell::RefCell;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    /// Walks one JSON value, noting the first repeated key in `found`.
    #[derive(Clone, Copy)]
    struct Unique<'a> {
        found: &'a RefCell<Option<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Unique<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }

        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    *self.found.borrow_mut() = Some(key);
                    return Err(de::Error::custom("a repeated key"));
                }
                map.next_value_seed(self)?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    // Any other error is malformed JSON, which jsonwebtoken refused already.
    let _ = Unique { found: &found }.deserialize(&mut deserializer);
    found.into_inner()
}

/// A PEM given inline or as a path to a file.
fn read_pem(value: &str) -> anyhow::Result<String> {
    if value.trim_start().starts_with("-----BEGIN") {
        Ok(value.to_owned())
    } else {
        std::fs::read_to_string(value).with_context(|| format!("reading the key file {value}"))
    }
}

/// The credentials a request carries, each of which must verify.
#[derive(Debug, PartialEq, Default)]
pub(crate) struct Credentials<'a> {
    /// Tokens, in the order they are used: `Authorization: Bearer`, the
    /// cookie, `?token=`.
    pub(crate) tokens: Vec<&'a str>,
    /// A single-use stream ticket (`?ticket=`).
    pub(crate) ticket: Option<&'a str>,
}

/// Finds the caller's credentials: `Authorization: Bearer`, the cookie
/// (when `cookie_name` is given), `?token=` and `?ticket=`. Every one
/// present counts: the caller verifies them all, so a bad one is never
/// passed over for a good one. An `Authorization` header that is not a
/// bearer token is refused, never ignored (a client that sends `Basic ...`
/// must not be served as anonymous), and so are two of them.
pub(crate) fn credentials<'a>(
    headers: &'a HeaderMap,
    cookie_name: Option<&str>,
    token_param: Option<&'a str>,
    ticket_param: Option<&'a str>,
) -> Result<Credentials<'a>, AuthError> {
    let mut authorization = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let bearer = match (authorization.next(), authorization.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(AuthError::TwoAuthorizations),
        (Some(value), None) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|value| value.trim().split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .filter(|token| !token.is_empty());
            Some(token.ok_or(AuthError::NotBearer)?)
        }
    };
    let cookie = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| Some(*name) == cookie_name)
        .map(|(_, value)| value.trim());
    let nonempty = |value: Option<&'a str>| value.filter(|value| !value.is_empty());
    Ok(Credentials {
        tokens: [bearer, nonempty(cookie), nonempty(token_param)]
            .into_iter()
            .flatten()
            .collect(),
        ticket: nonempty(ticket_param),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    /// Settings from `--flag value` pairs, as the command line will give them.
    fn settings(args: &[&str]) -> AuthSettings {
        let mut settings = AuthSettings::default();
        let mut args = args.to_vec();
        if let Some(at) = args.iter().position(|arg| *arg == "--jwt-allow-no-exp") {
            settings.jwt_allow_no_exp = true;
            args.remove(at);
        }
        for pair in args.chunks(2) {
            let value = Some(pair[1].to_owned());
            match pair[0] {
                "--jwt-secret" => settings.jwt_secret = Some(Secret::from(pair[1].to_owned())),
                "--jwt-public-key" => settings.jwt_public_key = value,
                "--jwt-algorithm" => settings.jwt_algorithm = value,
                "--jwt-issuer" => settings.jwt_issuer = value,
                "--jwt-audience" => settings.jwt_audience = value,
                other => panic!("unknown flag {other}"),
            }
        }
        settings
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        crate::clock::unix_now()
    }

    fn with_secret(extra: &[&str]) -> Authenticator {
        let mut args = vec!["--jwt-secret", SECRET];
        args.extend_from_slice(extra);
        Authenticator::from_settings(&settings(&args)).unwrap().0
    }

    fn hs(algorithm: Algorithm, secret: &str, claims: Json) -> String {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_valid_token_gives_its_identity() {
        let auth = with_secret(&[]);
        let token = hs(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "u1", "name": "Ann", "role": "admin", "exp": now() + 60, "team": 7}),
        );
        let identity = auth.verify(&token).unwrap();
        assert_eq!(identity.user_id, "u1");
        assert_eq!(identity.name.as_deref(), Some("Ann"));
        assert!(identity.admin);
        assert_eq!(identity.claims["team"], 7);
    }

    #[test]
    fn bad_tokens_are_refused_with_the_reason() {
        let auth = with_secret(&["--jwt-audience", "app", "--jwt-issuer", "me"]);
        let good = json!({"sub": "u1", "aud": "app", "iss": "me", "exp": now() + 60});
        let with = |change: Json| {
            let mut claims = good.clone();
            claims
                .as_object_mut()
                .unwrap()
                .extend(change.as_object().unwrap().clone());
            claims
        };
        assert!(
            auth.verify(&hs(Algorithm::HS256, SECRET, good.clone()))
                .is_ok()
        );
        let cases = [
            (
                hs(Algorithm::HS256, SECRET, with(json!({"exp": now() - 60}))),
                AuthError::Expired,
            ),
            (
                hs(Algorithm::HS256, SECRET, with(json!({"nbf": now() + 60}))),
                AuthError::NotYetValid,
            ),
            (
                hs(Algorithm::HS384, SECRET, good.clone()),
                AuthError::BadSignature,
            ),
            (
                hs(
                    Algorithm::HS256,
                    "another secret of thirty-two bytes!",
                    good.clone(),
                ),
                AuthError::BadSignature,
            ),
            (
                hs(Algorithm::HS256, SECRET, with(json!({"aud": "other"}))),
                AuthError::WrongAudience,
            ),
            (
                hs(Algorithm::HS256, SECRET, with(json!({"iss": "them"}))),
                AuthError::WrongIssuer,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(auth.verify(&token), Err(expected));
        }
        // Configured `aud` and `iss` are required, not only checked.
        for missing in ["aud", "iss"] {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                auth.verify(&hs(Algorithm::HS256, SECRET, claims)),
                Err(AuthError::Malformed(format!(
                    "claim `{missing}` is missing"
                ))),
            );
        }
        assert!(matches!(
            auth.verify("not.a.token"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            auth.verify(&hs(Algorithm::HS256, SECRET, json!({"exp": now() + 60}))),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = engine.encode(format!(
            r#"{{"sub":"u1","role":"admin","exp":{}}}"#,
            now() + 60
        ));
        for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            assert!(with_secret(&[]).verify(&token).is_err());
        }
    }

    #[test]
    fn surrealdb_record_access_tokens_are_accepted() {
        let auth = with_secret(&["--jwt-algorithm", "HS512"]);
        let claims = json!({
            "iat": now(), "nbf": now(), "exp": now() + 60, "iss": "SurrealDB",
            "jti": "b7e3", "NS": "app", "DB": "app", "AC": "users", "ID": "user:ann",
        });
        let identity = auth.verify(&hs(Algorithm::HS512, SECRET, claims)).unwrap();
        assert_eq!(identity.user_id, "user:ann");
        assert_eq!(
            identity.claims["sub"], "user:ann",
            "rules see the id as `$auth.sub`"
        );
        assert!(!identity.admin);
        assert_eq!(identity.claims["AC"], "users");
    }

    #[test]
    fn public_keys_verify_rs256_and_es256() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        for (algorithm, public, private) in [
            ("RS256", "rs256-public.pem", "rs256-private.pem"),
            ("ES256", "es256-public.pem", "es256-private.pk8.pem"),
        ] {
            let key_path = format!("{fixtures}/{public}");
            let config = settings(&["--jwt-algorithm", algorithm, "--jwt-public-key", &key_path]);
            let (auth, dev_token) = Authenticator::from_settings(&config).unwrap();
            assert!(dev_token.is_none());
            let pem = std::fs::read(format!("{fixtures}/{private}")).unwrap();
            let (key, alg) = match algorithm {
                "RS256" => (EncodingKey::from_rsa_pem(&pem).unwrap(), Algorithm::RS256),
                _ => (EncodingKey::from_ec_pem(&pem).unwrap(), Algorithm::ES256),
            };
            let token = jsonwebtoken::encode(
                &Header::new(alg),
                &json!({"sub": "k", "exp": now() + 60}),
                &key,
            )
            .unwrap();
            assert_eq!(auth.verify(&token).unwrap().user_id, "k", "{algorithm}");
            // An HS256 token signed with the public key as a secret is refused.
            let forged = hs(
                Algorithm::HS256,
                &String::from_utf8(std::fs::read(format!("{fixtures}/{public}")).unwrap()).unwrap(),
                json!({"sub": "k", "exp": now() + 60}),
            );
            assert_eq!(auth.verify(&forged), Err(AuthError::BadSignature));
        }
    }

    #[test]
    fn without_a_key_a_random_secret_and_an_admin_token_are_made() {
        let (auth, tokens) = Authenticator::from_settings(&AuthSettings::default()).unwrap();
        let tokens = tokens.unwrap();
        let identity = auth.verify(&tokens.admin).unwrap();
        assert!(identity.admin);
        let ann = auth.verify(&tokens.user).unwrap();
        assert_eq!(
            (ann.user_id.as_str(), ann.name.as_deref()),
            ("ann", Some("Ann"))
        );
        assert!(!ann.admin);
        let issued_at = ann.issued_at.unwrap();
        assert!(now().abs_diff(issued_at) <= 1);
        assert_eq!(
            ann.expires_at,
            Some(issued_at + DEV_TOKEN_LIFETIME.as_secs())
        );
        let (other, _) = Authenticator::from_settings(&AuthSettings::default()).unwrap();
        assert!(
            other
                .verify(&auth.sign(&json!({"sub": "x", "exp": now() + 60})).unwrap())
                .is_err(),
            "secrets differ per run"
        );
    }

    #[test]
    fn signed_tokens_carry_the_configured_issuer_and_audience() {
        // The development tokens of a run with `--jwt-issuer` and no key,
        // as well as those of a secret.
        let (auth, tokens) = Authenticator::from_settings(&settings(&[
            "--jwt-issuer",
            "me",
            "--jwt-audience",
            "you",
        ]))
        .unwrap();
        let identity = auth.verify(&tokens.unwrap().user).unwrap();
        assert_eq!(
            (&identity.claims["iss"], &identity.claims["aud"]),
            (&json!("me"), &json!("you"))
        );
        let auth = with_secret(&["--jwt-issuer", "me", "--jwt-audience", "you"]);
        let token = auth
            .issue(json!({"sub": "bob"}), Duration::from_secs(60))
            .unwrap();
        let identity = auth.verify(&token).unwrap();
        assert_eq!(identity.claims["iss"], "me");
        assert_eq!(identity.expires_at, Some(identity.issued_at.unwrap() + 60));
    }

    #[test]
    fn the_token_command_signs_with_the_secret_only() {
        let request = TokenArgs {
            sub: "ann".into(),
            name: Some("Ann".into()),
            role: Some("admin".into()),
            ttl: Duration::from_secs(600),
        };
        let secret = settings(&["--jwt-secret", SECRET, "--jwt-algorithm", "HS512"]);
        let token = sign_token(&secret, &request).unwrap();
        let identity = with_secret(&["--jwt-algorithm", "HS512"])
            .verify(&token)
            .unwrap();
        assert_eq!(
            (identity.user_id.as_str(), identity.name.as_deref()),
            ("ann", Some("Ann"))
        );
        assert!(identity.admin);
        assert_eq!(identity.expires_at, Some(identity.issued_at.unwrap() + 600));
        let public_key = settings(&["--jwt-public-key", "key.pem"]);
        assert!(matches!(
            sign_token(&public_key, &request),
            Err(SignError::PublicKey)
        ));
        assert!(matches!(
            sign_token(&AuthSettings::default(), &request),
            Err(SignError::NoSecret)
        ));
        let short = settings(&["--jwt-secret", "short"]);
        let error = sign_token(&short, &request).unwrap_err().to_string();
        assert_eq!(error, "--jwt-secret must be at least 32 bytes long");
    }

    #[test]
    fn short_secrets_and_mismatched_settings_are_refused() {
        for args in [
            vec!["--jwt-secret", "short"],
            vec!["--jwt-secret", SECRET, "--jwt-algorithm", "RS256"],
            vec!["--jwt-algorithm", "none"],
        ] {
            assert!(
                Authenticator::from_settings(&settings(&args)).is_err(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn every_credential_is_found_in_order() {
        fn found<'a>(
            headers: &'a HeaderMap,
            token: Option<&'a str>,
            ticket: Option<&'a str>,
        ) -> (Vec<&'a str>, Option<&'a str>) {
            let found = credentials(headers, Some("lh"), token, ticket).unwrap();
            (found.tokens, found.ticket)
        }
        let mut headers = HeaderMap::new();
        assert_eq!(found(&headers, None, Some("t1")), (vec![], Some("t1")));
        assert_eq!(
            found(&headers, Some("q"), Some("t1")),
            (vec!["q"], Some("t1"))
        );
        headers.insert("cookie", "a=1; lh=c; b=2".parse().unwrap());
        assert_eq!(found(&headers, Some("q"), None), (vec!["c", "q"], None));
        headers.insert("authorization", "Bearer h".parse().unwrap());
        assert_eq!(
            found(&headers, Some("q"), None),
            (vec!["h", "c", "q"], None)
        );
        assert_eq!(found(&HeaderMap::new(), Some(""), None), (vec![], None));
        let mut cookie_only = HeaderMap::new();
        cookie_only.insert("cookie", "lh=c".parse().unwrap());
        assert_eq!(
            credentials(&cookie_only, None, None, None).unwrap(),
            Credentials::default(),
            "cookies off"
        );
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let mut headers = HeaderMap::new();
        headers.append("authorization", "Bearer a".parse().unwrap());
        headers.append("authorization", "Bearer b".parse().unwrap());
        assert_eq!(
            credentials(&headers, None, None, None),
            Err(AuthError::TwoAuthorizations)
        );
    }

    #[test]
    fn an_authorization_header_that_is_not_bearer_is_refused() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer  ",
            "Token abc",
            "abc",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("authorization", value.parse().unwrap());
            assert!(
                matches!(
                    credentials(&headers, None, Some("q"), None),
                    Err(AuthError::NotBearer)
                ),
                "{value}"
            );
        }
    }

    #[test]
    fn fractional_times_are_read_and_exp_is_required() {
        let auth = with_secret(&[]);
        let identity = auth
            .verify(&hs(
                Algorithm::HS256,
                SECRET,
                json!({"sub": "u1", "exp": now() as f64 + 60.75, "iat": now() as f64 - 0.5}),
            ))
            .unwrap();
        assert_eq!(identity.expires_at, Some(now() + 60));
        assert_eq!(identity.issued_at, Some(now() - 1));
        assert!(matches!(
            auth.verify(&hs(Algorithm::HS256, SECRET, json!({"sub": "u1"}))),
            Err(AuthError::Malformed(_))
        ));
        let lenient = with_secret(&["--jwt-allow-no-exp"]);
        assert_eq!(
            lenient
                .verify(&hs(Algorithm::HS256, SECRET, json!({"sub": "u1"})))
                .unwrap()
                .expires_at,
            None
        );
    }
}
