//! `carga serve [--listen ADDR] [--concurrency N]`: the HTTP API
//! (webhooks, operator endpoints, health, metrics), the scheduler and the
//! workers in one process. Every `serve` process runs the scheduler:
//! enqueues are idempotent per slot, so N processes make one job.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::{CliResult, Failure, usage};
use crate::config::Settings;

/// The shortest operator token `serve` accepts on a non-loopback address:
/// 32 characters of `openssl rand -base64 32` are ≈190 bits.
const MIN_PUBLIC_TOKEN_CHARS: usize = 32;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Loads at once (overrides queue.concurrency; 0: no workers).
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Where the API listens (overrides http.listen).
    #[arg(long)]
    pub(crate) listen: Option<String>,
}

pub(crate) async fn run(mut settings: Settings, args: ServeArgs) -> CliResult {
    if let Some(n) = args.concurrency {
        settings.queue.concurrency = n;
    }
    let workers = settings.queue.concurrency > 0;
    if workers {
        super::require_nis_key(&settings)?;
    }
    let listen = args.listen.unwrap_or_else(|| settings.http.listen.clone());
    check_exposure(&listen, &settings.http.operator_token)
        .map_err(|e| usage(anyhow::anyhow!(e)))?;
    let shutdown = super::cancel_on_signal();
    // The database may be down at start: serve anyway (health says live,
    // /ready says why not ready) and migrate once it answers.
    let app = crate::app::App::connect(settings)
        .await
        .map_err(super::app_failure)?;
    tracing::info!(database = %app.target().description, "database");
    let runner = Arc::new(app.runner().map_err(super::app_failure)?);
    let state = app.api_state().map_err(super::app_failure)?;
    let server = crate::service::http::Server::bind(&listen, state)
        .await
        .map_err(|e| usage(anyhow::anyhow!("cannot listen on {listen}: {e}")))?;
    let address = server.local_addr().map_err(|e| Failure::Failed(e.into()))?;
    tracing::info!(%address, "API listening");
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(server.serve(stop_http.clone()));
    let migrated = match super::migrate_when_reachable(app.target(), &shutdown).await {
        Ok(migrated) => migrated,
        Err(failure) => {
            stop_http.cancel();
            let _ = http.await;
            return Err(failure);
        }
    };
    if !migrated {
        stop_http.cancel();
        let _ = http.await;
        return Ok(());
    }
    let scheduler = app.scheduler(&runner).await.map_err(super::app_failure)?;
    tracing::info!("scheduler started");
    if workers {
        runner.run(shutdown.cancelled_owned()).await;
    } else {
        shutdown.cancelled().await;
    }
    scheduler
        .shutdown()
        .await
        .context("failed to stop the scheduler")?;
    stop_http.cancel();
    let _ = http.await;
    Ok(())
}

/// Whether `listen` only accepts connections from this machine: an IP in
/// 127.0.0.0/8 or `::1` (also written as `::ffff:127.x.y.z`), or
/// `localhost`. `0.0.0.0`, `::`, other addresses and other host names are
/// public.
pub(crate) fn is_loopback(listen: &str) -> bool {
    if let Ok(address) = listen.parse::<std::net::SocketAddr>() {
        return address.ip().to_canonical().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// Refuses a public address with no operator token or a short one: the
/// console and the operator API would be open to nobody, or to whoever
/// guesses it. Loopback may use any token (a developer's machine). The
/// message never quotes the token or its length.
fn check_exposure(listen: &str, token: &SecretString) -> Result<(), String> {
    if is_loopback(listen) {
        return Ok(());
    }
    let characters = token.expose_secret().chars().count();
    if characters == 0 {
        return Err(format!(
            "http.operator_token is not set: the console and the operator API would be open to nobody on {listen}; set CARGA__HTTP__OPERATOR_TOKEN or listen on loopback"
        ));
    }
    if characters < MIN_PUBLIC_TOKEN_CHARS {
        return Err(format!(
            "http.operator_token is too weak to listen on the public address {listen}: use at least {MIN_PUBLIC_TOKEN_CHARS} random characters (e.g. openssl rand -base64 32) in CARGA__HTTP__OPERATOR_TOKEN, or listen on loopback"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_127_slash_8_and_colon_colon_1() {
        for listen in [
            "127.0.0.1:8080",
            "127.0.0.2:0",
            "127.255.255.254:80",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
            "localhost:8080",
            "LocalHost:1",
        ] {
            assert!(is_loopback(listen), "{listen}");
        }
        for listen in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.0.0.1:80",
            "192.168.1.10:80",
            "[::ffff:10.0.0.1]:80",
            "128.0.0.1:80",
            "example.org:80",
            "localhost.example.org:80",
            "localhost",
            "",
        ] {
            assert!(!is_loopback(listen), "{listen}");
        }
    }

    #[test]
    fn public_addresses_need_a_long_token() {
        let token = |t: &str| SecretString::from(t.to_string());
        let long = "k".repeat(MIN_PUBLIC_TOKEN_CHARS);
        let short = "k".repeat(MIN_PUBLIC_TOKEN_CHARS - 1);
        assert!(check_exposure("0.0.0.0:80", &token(&long)).is_ok());
        let refused = check_exposure("0.0.0.0:80", &token(&short)).expect_err("short");
        assert!(
            refused.contains("32") && !refused.contains(&short),
            "{refused}"
        );
        assert!(
            check_exposure("[::]:80", &token(""))
                .expect_err("empty")
                .contains("not set")
        );
        // Characters, not bytes: 31 two-byte characters are still 31.
        assert!(check_exposure("0.0.0.0:80", &token(&"é".repeat(31))).is_err());
        for listen in ["127.0.0.2:80", "[::1]:80", "localhost:80"] {
            assert!(check_exposure(listen, &token("short")).is_ok(), "{listen}");
            assert!(check_exposure(listen, &token("")).is_ok(), "{listen}");
        }
    }
}
