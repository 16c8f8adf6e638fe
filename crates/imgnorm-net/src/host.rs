//! What the process knows about the machine it runs on: its host name, as
//! workers report it and self-signed certificates name it.

/// This machine's host name: `$HOSTNAME`, else `/etc/hostname`, else
/// `localhost`.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
