//! `ServerSettings`: everything a server can be told, as one type behind both
//! the `chorus server` flags (clap) and a scenario's `[server]` table
//! (serde), so the two cannot drift apart. Every field is optional; what an
//! absent one means is decided in one place, `resolve`, for one of two
//! `Profile`s: a server people run (`chorus server`), or the harness's
//! embedded server (abuse limits out of the way, history in memory, a
//! temporary data directory).
//!
//! Values are written the same way in both: durations as `"500ms"`, `"10s"`,
//! `"30d"` (or a number of seconds in TOML), sizes as `"64KiB"` (or a number of
//! bytes), rates as `"100/s"` or `"off"`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::auth::AuthMode;
use super::chat::uploads::UploadLimits;
use super::cluster::ClusterConfig;
use super::history::store::Retention;
use super::history::store::sqlite::Durability;
use super::history::{Backend, HistoryConfig, check_commit_window};
use super::limits::{DEFAULT_API_RATE, RateLimit, parse_rate};
use super::net::security::{DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_TOKEN_TTL, SecurityConfig};
use super::net::tls::TlsSource;
use super::{FileLimits, ServerConfig, SessionConfig};
use crate::units::{parse_duration, parse_size};

/// A duration as people write it: `"10s"` on the command line, `"10s"` or
/// `10` (seconds) in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(Span)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Seconds(f64),
        }
        let text = match Written::deserialize(deserializer)? {
            Written::Text(text) => text,
            Written::Seconds(seconds) => seconds.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A size in bytes as people write it: `"64KiB"`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl FromStr for Size {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_size(text).map(Size)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Bytes(u64),
        }
        let text = match Written::deserialize(deserializer)? {
            Written::Text(text) => text,
            Written::Bytes(bytes) => bytes.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A rate: `"100/s"`, `"6000/min"`, or `"off"` (`None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub Option<f64>);

impl FromStr for Rate {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_rate(text).map(Rate)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Where history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryKind {
    /// In DIR/chorus.db (see --data).
    Sqlite,
    /// In memory, lost at exit.
    Memory,
    /// Not at all.
    Off,
}

/// How durable a stored message is (SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncKind {
    /// An ack survives a power loss.
    Full,
    /// An ack survives a server crash (faster).
    Normal,
}

/// Whose defaults an absent setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `chorus server`: the documented defaults.
    Server,
    /// The harness's embedded server: no rate limit, no per-address cap,
    /// room for a million connections, history in memory, and a temporary
    /// data directory (removed after the run) unless `data` is set.
    Harness,
}

/// A setting that cannot be used, and why; `key` is its scenario key
/// (`--key-with-dashes` on the command line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct SettingsError {
    pub key: &'static str,
    pub why: String,
}

/// Everything a server can be told. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Largest message accepted; a bigger one closes the connection with 1009. [default: 64KiB, 16MiB with --echo]
    #[arg(long, value_name = "SIZE")]
    pub max_message_size: Option<Size>,
    /// Most connections at once (from accept, WebSocket or not); more are refused with HTTP 503.
    /// [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most rooms at once. [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_rooms: Option<usize>,
    /// Rooms bigger than this do not announce joins, leaves and renames to every member
    /// (each would cost one delivery per member); `/who` still lists everyone. [default: 1000]
    #[arg(long, value_name = "MEMBERS")]
    pub presence_limit: Option<usize>,
    /// Time a new connection has to complete TLS and its HTTP request head (also how long an idle
    /// keep-alive connection stays open). [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub handshake_timeout: Option<Span>,
    /// Ping a connection after this long without a frame from it. [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub ping_interval: Option<Span>,
    /// After a ping, close the connection (reason `timeout`) if nothing comes back within this. [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub pong_timeout: Option<Span>,
    /// Most bytes queued for one connection; a reader further behind misses messages (announced by
    /// `gap`), or is closed (reason `slow`) with --history off. [default: 4MiB; with --echo, 4 x the
    /// message size limit]
    #[arg(long, value_name = "SIZE")]
    pub max_queue_bytes: Option<Size>,
    /// Most events queued for one connection (same policy). [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_queue_messages: Option<usize>,
    /// Close (reason `slow`) a connection that misses more than N messages in one stretch of
    /// lagging (misses less than 1s after it last caught up belong to the same stretch). [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_gap: Option<u64>,
    /// Close (reason `slow`) a connection that keeps missing messages for longer than this. [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub max_lag: Option<Span>,
    /// On shutdown, how long to wait for connections to close. [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<Span>,
    /// Data directory (history in DIR/chorus.db, accounts in DIR/accounts.db). [default: $CHORUS_DATA,
    /// else $XDG_DATA_HOME/chorus, else ~/.local/share/chorus]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Echo every data frame on / back unchanged instead of chatting (protocol conformance, benchmarks).
    #[arg(long)]
    #[serde(default)]
    pub echo: bool,
    /// Accounts and tokens: off (everyone a guest), optional (a token signs you in), required (no
    /// token: 401). [default: off]
    #[arg(long, value_enum)]
    pub auth: Option<AuthMode>,
    /// Secret that signs tokens (32+ bytes). [default: generated once into DIR/auth-secret, mode 0600]
    #[arg(long, env = "CHORUS_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// How long a token from /api/login or /api/register stays valid. [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub token_ttl: Option<Span>,
    /// Accept WebSocket handshakes from this browser origin only (repeatable; e.g.
    /// https://chat.example.com). Handshakes without an Origin header (non-browser clients) are
    /// accepted. [default: any origin]
    #[arg(long, value_name = "ORIGIN")]
    #[serde(default)]
    pub allowed_origin: Vec<String>,
    /// Serve https/wss with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve https/wss with a self-signed certificate kept in DIR/tls (for local use; logs its fingerprint).
    #[arg(long, conflicts_with = "tls_cert")]
    #[serde(default)]
    pub tls_self_signed: bool,
    /// Messages per second per connection, sustained ("100/s", "6000/min", "off"). [default: 100/s; off
    /// with --echo and in scenarios]
    #[arg(long, value_name = "RATE")]
    pub rate_limit: Option<Rate>,
    /// Messages a connection may send at once above the sustained rate. [default: 200]
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u32>,
    /// Most open connections from one address (IPv6: one /64); 0 for no limit. Raise it for load
    /// tests from few addresses, and behind a reverse proxy. [default: 1000; 0 in scenarios]
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Most frames one message may arrive in. [default: max(1024, message size limit / 64)]
    #[arg(long, value_name = "N")]
    pub max_fragments: Option<usize>,
    /// Account API calls (/api/register, /api/login) per address, after a burst of 10 ("off" to
    /// disable). [default: 1/s]
    #[arg(long, value_name = "RATE")]
    pub api_rate_limit: Option<Rate>,
    /// Where history is kept: in DIR/chorus.db (see --data), in memory (lost at exit), or not at all.
    /// [default: sqlite; memory in scenarios]
    #[arg(long, value_enum)]
    pub history: Option<HistoryKind>,
    /// Keep at most the last N messages of each room (0: no count limit). [default: 10000]
    #[arg(long, value_name = "N")]
    pub retain_messages: Option<u64>,
    /// Forget messages older than this, e.g. 30d, 12h (0: no age limit). [default: 30d]
    #[arg(long, value_name = "DURATION")]
    pub retain_age: Option<Span>,
    /// SQLite durability: an ack survives a power loss (full) or a server crash (normal, faster).
    /// [default: full]
    #[arg(long, value_enum)]
    pub history_sync: Option<SyncKind>,
    /// SQLite group commit: under load, one commit (one fsync) per this long at most, with every
    /// message that came meanwhile; acks wait up to this much longer (0: commit each batch at once;
    /// at most 1s). [default: 10ms]
    #[arg(long, value_name = "DURATION")]
    pub history_commit_window: Option<Span>,
    /// Largest file a client may share. [default: 100MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_file_size: Option<Size>,
    /// Most bytes of shared files kept in all; the oldest files are deleted to make room (they also
    /// go after --retain-age). [default: 2GiB on disk (with --history sqlite), 256MiB in memory]
    #[arg(long, value_name = "SIZE")]
    pub file_storage: Option<Size>,
    /// Uploads one connection may have in progress at once. [default: 2]
    #[arg(long, value_name = "N")]
    pub max_uploads: Option<usize>,
    /// An upload that gets no chunk for this long is dropped (and its bytes deleted). [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub upload_timeout: Option<Span>,
    /// Share rooms, presence, seq and history with other chorus nodes through this Redis
    /// (redis://host:port). History then lives in Redis streams (with --retain-messages and
    /// --retain-age), not in --data.
    #[arg(long, value_name = "URL", env = "CHORUS_REDIS")]
    pub redis: Option<String>,
    /// With --redis: a node whose heartbeat is older than this is lost, and its members leave
    /// their rooms (reason node_lost). [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub redis_node_ttl: Option<Span>,
}

/// A `Span` setting, or `default`.
fn span(value: Option<Span>, default: Duration) -> Duration {
    value.map_or(default, |Span(d)| d)
}

impl ServerSettings {
    /// What the settings mean, absent ones taking `profile`'s defaults.
    /// Also says whether the data directory is a temporary one (the
    /// harness's, to remove after the run).
    pub fn resolve(&self, profile: Profile) -> Result<(ServerConfig, bool), SettingsError> {
        let defaults = ServerConfig::default();
        let harness = profile == Profile::Harness;
        let max_message_size = match self.max_message_size {
            Some(Size(size)) => size,
            None if self.echo => 16 << 20,
            None => defaults.max_message_size,
        };
        let (data_dir, temporary) = match (&self.data, profile) {
            (Some(dir), _) => (dir.clone(), false),
            (None, Profile::Server) => (super::default_data_dir(), false),
            (None, Profile::Harness) => {
                let unique = format!("chorus-run-{}-{}", std::process::id(), crate::ids::now_millis());
                (std::env::temp_dir().join(unique), true)
            }
        };
        let history = self.history_config(profile)?;
        let temporary = temporary && history.backend == Backend::Sqlite;
        let config = ServerConfig {
            max_message_size,
            max_connections: self.max_connections.unwrap_or(if harness { 1_000_000 } else { defaults.max_connections }),
            max_rooms: self.max_rooms.unwrap_or(defaults.max_rooms),
            presence_limit: self.presence_limit.unwrap_or(defaults.presence_limit),
            handshake_timeout: span(self.handshake_timeout, defaults.handshake_timeout),
            shutdown_grace: span(self.shutdown_grace, defaults.shutdown_grace),
            data_dir,
            history,
            session: self.session_config(profile, max_message_size),
            echo: self.echo,
            security: self.security_config(profile),
            redis: self.redis.as_ref().map(|url| ClusterConfig {
                url: url.clone(),
                node_ttl: span(self.redis_node_ttl, Duration::from_secs(5)),
                retention: self.retention(),
            }),
            files: FileLimits {
                max_file_size: self.max_file_size.map_or(defaults.files.max_file_size, |Size(size)| size as u64),
                max_total: self.file_storage.map(|Size(size)| size as u64),
            },
        };
        Ok((config, temporary))
    }

    fn session_config(&self, profile: Profile, max_message_size: usize) -> SessionConfig {
        let defaults = SessionConfig::default();
        let default_queue = if self.echo { (4 * max_message_size).max(4 << 20) } else { defaults.max_queue_bytes };
        let per_second = match self.rate_limit {
            Some(Rate(rate)) => rate,
            None if self.echo || profile == Profile::Harness => None,
            None => Some(RateLimit::default().per_second),
        };
        let burst = self.rate_burst.unwrap_or(RateLimit::default().burst);
        SessionConfig {
            ping_interval: span(self.ping_interval, defaults.ping_interval),
            pong_timeout: span(self.pong_timeout, defaults.pong_timeout),
            max_queue_items: self.max_queue_messages.unwrap_or(defaults.max_queue_items),
            max_queue_bytes: self.max_queue_bytes.map_or(default_queue, |Size(size)| size),
            rate_limit: per_second.map(|per_second| RateLimit { per_second, burst }),
            max_gap: self.max_gap.unwrap_or(defaults.max_gap),
            max_lag: span(self.max_lag, defaults.max_lag),
            uploads: UploadLimits {
                max_uploads: self.max_uploads.unwrap_or(defaults.uploads.max_uploads),
                timeout: span(self.upload_timeout, defaults.uploads.timeout),
            },
            ..defaults
        }
    }

    fn history_config(&self, profile: Profile) -> Result<HistoryConfig, SettingsError> {
        let defaults = HistoryConfig::default();
        let backend = match (self.history, profile) {
            (Some(HistoryKind::Sqlite), _) | (None, Profile::Server) => Backend::Sqlite,
            (Some(HistoryKind::Memory), _) | (None, Profile::Harness) => Backend::Memory,
            (Some(HistoryKind::Off), _) => Backend::Off,
        };
        let commit_window = span(self.history_commit_window, defaults.commit_window);
        let commit_window =
            check_commit_window(commit_window).map_err(|why| SettingsError { key: "history_commit_window", why })?;
        let retention = Retention {
            max_messages: self.retain_messages.or(Retention::default().max_messages).filter(|n| *n > 0),
            max_age: self
                .retain_age
                .map_or(Retention::default().max_age, |Span(age)| Some(age))
                .filter(|a| !a.is_zero()),
        };
        let durability = match self.history_sync {
            Some(SyncKind::Normal) => Durability::Normal,
            Some(SyncKind::Full) | None => Durability::Full,
        };
        Ok(HistoryConfig { backend, retention, durability, commit_window, ..defaults })
    }

    /// How much history each room keeps.
    fn retention(&self) -> Retention {
        Retention {
            max_messages: self.retain_messages.or(Retention::default().max_messages).filter(|n| *n > 0),
            max_age: self
                .retain_age
                .map_or(Retention::default().max_age, |Span(age)| Some(age))
                .filter(|a| !a.is_zero()),
        }
    }

    fn security_config(&self, profile: Profile) -> SecurityConfig {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSource::Files { cert: cert.clone(), key: key.clone() }),
            _ if self.tls_self_signed => Some(TlsSource::SelfSigned),
            _ => None,
        };
        let per_ip = match profile {
            Profile::Server => DEFAULT_MAX_CONNECTIONS_PER_IP,
            Profile::Harness => 0,
        };
        let api_rate_limit = match self.api_rate_limit {
            Some(Rate(rate)) => rate.map(|per_second| RateLimit { per_second, ..DEFAULT_API_RATE }),
            None => Some(DEFAULT_API_RATE),
        };
        SecurityConfig {
            auth: self.auth.unwrap_or_default(),
            auth_secret: self.auth_secret.clone(),
            token_ttl: span(self.token_ttl, DEFAULT_TOKEN_TTL),
            allowed_origins: self.allowed_origin.clone(),
            tls,
            max_connections_per_ip: self.max_connections_per_ip.unwrap_or(per_ip),
            max_fragments: self.max_fragments,
            api_rate_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        settings: ServerSettings,
    }

    fn from_flags(flags: &[&str]) -> ServerSettings {
        Cli::try_parse_from(std::iter::once("chorus").chain(flags.iter().copied())).unwrap().settings
    }

    fn from_toml(text: &str) -> ServerSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flags_and_toml_mean_the_same() {
        let flags = from_flags(&[
            "--max-message-size",
            "1MiB",
            "--ping-interval",
            "5s",
            "--rate-limit",
            "off",
            "--history",
            "memory",
            "--history-commit-window",
            "25ms",
            "--allowed-origin",
            "https://a.example",
        ]);
        let toml = from_toml(
            "max_message_size = \"1MiB\"\nping_interval = 5\nrate_limit = \"off\"\nhistory = \"memory\"\n\
             history_commit_window = \"25ms\"\nallowed_origin = [\"https://a.example\"]",
        );
        assert_eq!(flags, toml);
        let (config, _) = flags.resolve(Profile::Server).unwrap();
        assert_eq!(config.max_message_size, 1 << 20);
        assert_eq!(config.session.ping_interval, Duration::from_secs(5));
        assert_eq!(config.session.rate_limit, None);
        assert_eq!(config.history.commit_window, Duration::from_millis(25));
    }

    #[test]
    fn the_profiles_differ_only_where_documented() {
        let none = ServerSettings::default();
        let (server, temporary) = none.resolve(Profile::Server).unwrap();
        assert!(!temporary);
        assert_eq!(server.history.backend, Backend::Sqlite);
        assert_eq!(server.session.rate_limit, Some(RateLimit::default()));
        assert_eq!(server.security.max_connections_per_ip, DEFAULT_MAX_CONNECTIONS_PER_IP);
        let (harness, temporary) = none.resolve(Profile::Harness).unwrap();
        assert!(!temporary, "memory history needs no directory");
        assert_eq!(harness.history.backend, Backend::Memory);
        assert_eq!(harness.session.rate_limit, None);
        assert_eq!(harness.security.max_connections_per_ip, 0);
        assert_eq!(harness.max_connections, 1_000_000);
        assert_eq!(harness.session.ping_interval, server.session.ping_interval);
        let sqlite = ServerSettings { history: Some(HistoryKind::Sqlite), ..ServerSettings::default() };
        assert!(sqlite.resolve(Profile::Harness).unwrap().1, "a temporary directory for SQLite");
    }

    #[test]
    fn echo_changes_the_size_defaults_and_bad_values_are_refused() {
        let echo = from_flags(&["--echo"]).resolve(Profile::Server).unwrap().0;
        assert_eq!(echo.max_message_size, 16 << 20);
        assert_eq!(echo.session.rate_limit, None);
        let err = from_flags(&["--history-commit-window", "2s"]).resolve(Profile::Server).unwrap_err();
        assert_eq!(err.key, "history_commit_window");
        assert!(Cli::try_parse_from(["chorus", "--ping-interval", "soon"]).is_err());
        assert!(toml::from_str::<ServerSettings>("ping_interval = \"soon\"").is_err());
        assert!(toml::from_str::<ServerSettings>("warp = true").is_err(), "unknown keys are refused");
    }
}
