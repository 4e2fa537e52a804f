//! How the running process is told to re-read its config: the [`Reload`] trait. The admin API
//! calls it (`POST /v1/reload`, `GET /v1/routes`) and `server::reload` implements it, so
//! neither imports the other.

/// Something that re-reads the config and applies it: `Ok` with a JSON report, `Err` with why
/// the file was refused (the running config stays).
#[async_trait::async_trait]
pub trait Reload: Send + Sync {
    async fn reload(&self) -> Result<serde_json::Value, String>;

    /// Every HTTP listener's current routes (`GET /v1/routes`):
    /// `[{"listen": ADDR, "routes": [...]}]`.
    fn routes(&self) -> serde_json::Value {
        serde_json::Value::Array(Vec::new())
    }
}
