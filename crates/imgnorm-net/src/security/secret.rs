//! The shared secret workers and clients present to the master: parsing and
//! generating it, the client interceptor that sends it as gRPC metadata on
//! every call, and the server interceptor that checks it in constant time.
//! The secret never appears in `Debug` output or in logs.
use std::path::Path;
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::SecurityError;

/// gRPC metadata key carrying the secret.
pub const SECRET_HEADER: &str = "x-imgnorm-secret";
/// Environment variable read when neither `--secret` nor `--secret-file` is given.
pub const SECRET_ENV: &str = "IMGNORM_SECRET";
/// Fewest characters a secret may have.
pub const MIN_SECRET_LEN: usize = 16;

/// A shared secret: at least [`MIN_SECRET_LEN`] visible ASCII characters
/// (it travels as a gRPC metadata value). Cheap to clone; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// Parses a secret; surrounding whitespace (a file's final newline) is
    /// dropped. `origin` names where it came from, for the error.
    pub fn parse(text: &str, origin: &str) -> Result<Secret, SecurityError> {
        let t = text.trim();
        if t.len() < MIN_SECRET_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecurityError::BadSecret {
                origin: origin.to_string(),
            });
        }
        Ok(Secret(t.into()))
    }

    /// A random secret: 32 hex digits from the system's random source.
    pub fn generate() -> Result<Secret, SecurityError> {
        use std::io::Read;
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(SecurityError::Random)?;
        Ok(Secret(
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
                .into(),
        ))
    }

    /// The secret from `--secret`, else `--secret-file`, else
    /// `$IMGNORM_SECRET`; None when none is set.
    pub fn from_sources(
        flag: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<Secret>, SecurityError> {
        if let Some(s) = flag {
            return Secret::parse(s, "--secret").map(Some);
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SecurityError::ReadFile {
                what: "secret file",
                path: path.to_path_buf(),
                source,
            })?;
            return Secret::parse(&text, &format!("--secret-file {}", path.display())).map(Some);
        }
        match std::env::var(SECRET_ENV) {
            Ok(s) if !s.trim().is_empty() => Secret::parse(&s, SECRET_ENV).map(Some),
            _ => Ok(None),
        }
    }

    /// The secret itself, for handing it to a child process's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` equals the secret. The time taken does not depend
    /// on where the two first differ, nor on the presented length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let want = self.0.as_bytes();
        let mut diff = want.len() ^ presented.len();
        for (i, w) in want.iter().enumerate() {
            let p = presented.get(i).copied().unwrap_or(!*w);
            diff |= usize::from(w ^ p);
        }
        std::hint::black_box(diff) == 0
    }
}

/// Client side: adds the secret (if any) to every outgoing call.
#[derive(Clone, Default)]
pub struct PresentSecret(Option<MetadataValue<Ascii>>);

impl PresentSecret {
    /// Presents `secret` (nothing when None).
    pub fn new(secret: Option<&Secret>) -> PresentSecret {
        // A parsed secret is visible ASCII, always a valid metadata value.
        PresentSecret(secret.and_then(|s| MetadataValue::try_from(s.expose()).ok()))
    }
}

impl Interceptor for PresentSecret {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(SECRET_HEADER, v.clone());
        }
        Ok(req)
    }
}

/// Server side: refuses calls without the secret with `UNAUTHENTICATED`
/// (every call passes when the master has no secret).
#[derive(Clone, Default)]
pub struct RequireSecret(Option<Secret>);

/// Start of the status message for a call without a secret.
pub const MISSING: &str = "missing secret";
/// Start of the status message for a call with a different secret.
pub const WRONG: &str = "wrong secret";

impl RequireSecret {
    /// Requires `secret` (nothing when None).
    pub fn new(secret: Option<Secret>) -> RequireSecret {
        RequireSecret(secret)
    }
}

impl Interceptor for RequireSecret {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(secret) = &self.0 else {
            return Ok(req);
        };
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        match req.metadata().get(SECRET_HEADER) {
            Some(v) if secret.matches(v.as_bytes()) => Ok(req),
            Some(_) => {
                tracing::warn!(%peer, "refused a call with a wrong secret");
                Err(Status::unauthenticated(format!(
                    "{WRONG}: the secret presented does not match this master's"
                )))
            }
            None => {
                tracing::warn!(%peer, "refused a call without a secret");
                Err(Status::unauthenticated(format!(
                    "{MISSING}: this master requires the shared secret \
                     (--secret-file FILE, ${SECRET_ENV} or --secret)"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_and_checks() {
        let s = Secret::parse("0123456789abcdef\n", "test").unwrap();
        assert_eq!(s.expose(), "0123456789abcdef");
        assert!(Secret::parse("short", "test").is_err());
        assert!(Secret::parse("0123456789 abcdef", "test").is_err());
        assert!(Secret::parse("0123456789abcdéf", "test").is_err());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let g = Secret::generate().unwrap();
        assert_eq!(g.expose().len(), 32);
        assert_ne!(g, Secret::generate().unwrap());
    }

    #[test]
    fn matches_only_the_same_bytes() {
        let s = Secret::parse("0123456789abcdef", "test").unwrap();
        assert!(s.matches(b"0123456789abcdef"));
        assert!(!s.matches(b"0123456789abcdeF"));
        assert!(!s.matches(b"0123456789abcde"));
        assert!(!s.matches(b"0123456789abcdef0"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn interceptors_agree_and_refuse_clearly() {
        let s = Secret::parse("0123456789abcdef", "test").unwrap();
        let mut server = RequireSecret::new(Some(s.clone()));
        let sent = PresentSecret::new(Some(&s)).call(Request::new(())).unwrap();
        assert!(server.call(sent).is_ok());
        let e = server.call(Request::new(())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().starts_with(MISSING), "{}", e.message());
        let other = Secret::parse("fedcba9876543210", "test").unwrap();
        let sent = PresentSecret::new(Some(&other))
            .call(Request::new(()))
            .unwrap();
        let e = server.call(sent).unwrap_err();
        assert!(e.message().starts_with(WRONG), "{}", e.message());
        assert!(!e.message().contains("fedcba"), "never echo a secret");
        // No secret configured: everything passes.
        assert!(RequireSecret::new(None).call(Request::new(())).is_ok());
    }
}
