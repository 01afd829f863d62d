//! `gateway`: the POTS-to-SIP gateway daemon.

use clap::{Parser, Subcommand};
use gateway::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// POTS-to-SIP gateway with server-side call pickup.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML), e.g. examples/office.toml.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax), overrides RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    /// What to do; without a subcommand the gateway runs.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists call detail records from the configured database: the most recent as a
    /// table, or exported as CSV or JSON (oldest first) for billing.
    Cdr {
        /// How many records at most (default: 20 for the table, all for an export or
        /// with --since).
        #[arg(long)]
        limit: Option<usize>,
        /// How to print them.
        #[arg(long, value_enum, default_value_t = CdrFormat::Table)]
        format: CdrFormat,
        /// Only calls that started ringing at or after this: a UTC date or time
        /// (2026-12-01, "2026-12-01 08:30"), a Unix time (@1796112000) or an age (24h, 7d).
        #[arg(long)]
        since: Option<String>,
    },
    /// Shows the running gateway (over its control socket, `[status] control_socket`):
    /// calls, registrations, analog ports, pickups, subscriptions; `reload` re-reads
    /// the config file and the TLS files; `metrics` prints the Prometheus text.
    Status {
        /// What to show or do.
        #[arg(value_enum, default_value_t = StatusWhat::All)]
        what: StatusWhat,
        /// JSON for scripts instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Brings the configured database's schema up to date (SQLite file or PostgreSQL)
    /// and exits; refuses a schema newer than this gateway.
    Migrate,
    /// Demo mode: acts as the emulated analog phones and central office of the running
    /// gateway, e.g. `lift 1`, `dial 1 201`, `listen 1`, `ring 3 5551234 Jane`, `hangup 1`.
    Analog {
        /// The command and its arguments (run `gateway analog help` for the list).
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

/// How `gateway cdr` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CdrFormat {
    /// Aligned columns for people, newest first, failed pickups under their call.
    Table,
    /// RFC 4180 CSV with a header line, oldest first.
    Csv,
    /// A JSON array of objects, oldest first.
    Json,
}

/// What `gateway status` shows or does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatusWhat {
    /// Every list below.
    All,
    /// Calls up and ringing: parties, state, durations, media counters, node and shard.
    Calls,
    /// Registered contacts: transport, source, expiry, User-Agent.
    Registrations,
    /// Analog ports, like `dahdi show channels`: line state, alarm, call, media.
    Ports,
    /// Pickups in flight and the recent ones.
    Pickups,
    /// Dialog event subscriptions (BLF keys).
    Subscriptions,
    /// Re-reads the config (extensions and [calls] for new calls) and the TLS files.
    Reload,
    /// The Prometheus metrics text.
    Metrics,
}

/// How `gateway status` draws one list.
type Table = fn(&gateway::status::StatusView) -> String;

/// `gateway status ...`: asks the running gateway at `socket`.
fn show_status(socket: &std::path::Path, what: StatusWhat, json: bool) -> ExitCode {
    use gateway::status::{control, table};
    let command = match what {
        StatusWhat::Reload => Some("reload"),
        StatusWhat::Metrics => Some("metrics"),
        _ => None,
    };
    if let Some(command) = command {
        return match control::ask(socket, command) {
            Ok(answer) => {
                print!("{}", answer.strip_prefix("ok\n").unwrap_or(&answer));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gateway: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let view = match control::fetch(socket) {
        Ok(view) => view,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sections: Vec<(&str, Table)> = match what {
        StatusWhat::Calls => vec![("calls", table::calls)],
        StatusWhat::Registrations => vec![("registrations", table::registrations)],
        StatusWhat::Ports => vec![("ports", table::ports)],
        StatusWhat::Pickups => vec![("pickups", table::pickups)],
        StatusWhat::Subscriptions => vec![("subscriptions", table::subscriptions)],
        _ => vec![
            ("calls", table::calls),
            ("registrations", table::registrations),
            ("ports", table::ports),
            ("pickups", table::pickups),
            ("subscriptions", table::subscriptions),
        ],
    };
    if json {
        let value = serde_json::to_value(&view).unwrap_or_default();
        let shown = match sections.as_slice() {
            [(name, _)] => value.get(name).cloned().unwrap_or_default(),
            _ => value,
        };
        println!("{shown}");
        return ExitCode::SUCCESS;
    }
    for (index, (name, render)) in sections.iter().enumerate() {
        if sections.len() > 1 {
            if index > 0 {
                println!();
            }
            println!("== {name} ==");
        }
        print!("{}", render(&view));
    }
    ExitCode::SUCCESS
}

/// `gateway analog ...`: one operator command to the running gateway.
fn operate_analog(config: &Config, words: &[String]) -> ExitCode {
    let Some(analog) = &config.analog else {
        eprintln!("gateway: this configuration has no [analog] section");
        return ExitCode::FAILURE;
    };
    let socket = analog.control_socket_path(&config.database);
    match gateway::analog::control::request(&socket, &words.join(" ")) {
        Ok(answer) if answer.starts_with("ok") => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprint!("gateway: {answer}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `gateway cdr`: prints or exports CDRs.
fn list_cdrs(
    config: &Config,
    limit: Option<usize>,
    format: CdrFormat,
    since: Option<&str>,
) -> ExitCode {
    use gateway::report::{export, since::parse_since};
    use gateway::store::{CallStore, Store};
    let since_ms = match since.map(|s| parse_since(s, gateway::engine::Now::system().unix_ms)) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let everything = since.is_some() || format != CdrFormat::Table;
    let limit = limit.unwrap_or(if everything { usize::MAX } else { 20 });
    let calls = Store::open_config(&config.database).and_then(|store| {
        store
            .cdrs_since(since_ms, limit)?
            .into_iter()
            .map(|cdr| {
                let failed = store.failed_pickups(&cdr.call_key)?;
                Ok((cdr, failed))
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let mut calls = match calls {
        Ok(calls) => calls,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match format {
        CdrFormat::Table => Ok(gateway::report::cdr_table(&calls)),
        CdrFormat::Csv | CdrFormat::Json => {
            calls.reverse();
            let rows: Vec<export::CdrRow> = calls
                .iter()
                .map(|(cdr, failed)| export::CdrRow::new(cdr, failed))
                .collect();
            match format {
                CdrFormat::Csv => export::csv(&rows),
                _ => export::json(&rows).map(|json| json + "\n"),
            }
        }
    };
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway: cannot write the CDRs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `gateway migrate`: applies the missing migrations and says what it did.
fn migrate(config: &Config) -> ExitCode {
    use gateway::store::Store;
    match Store::open_config(&config.database) {
        Ok(store) => {
            let (from, to) = store.migrated();
            if from == to {
                println!("database {}: schema version {to}, up to date", store.name());
            } else {
                println!(
                    "database {}: schema migrated from version {from} to {to}",
                    store.name()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to journald, with fields (`PRIORITY`, `TARGET`, `CODE_FILE`...), when systemd
/// connected stderr to the journal (`$JOURNAL_STREAM`) and its socket is there; else as
/// text lines to stderr.
fn init_logging(filter: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let journal = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|layer| {
            // syslog's levels: info is informational (6), debug and trace debug (7).
            use tracing_journald::{Priority, PriorityMappings};
            layer
                .with_syslog_identifier("pots-gateway".into())
                .with_priority_mappings(PriorityMappings {
                    info: Priority::Informational,
                    debug: Priority::Debug,
                    ..PriorityMappings::new()
                })
        });
    match journal {
        Some(journal) => tracing_subscriber::registry()
            .with(filter)
            .with(journal)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    init_logging(&filter);
    let Some(path) = cli.config.clone() else {
        eprintln!("gateway: --config PATH is required (e.g. --config examples/office.toml)");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gateway: {e}");
            // The running gateway may still be asked (a reload then says why it refuses).
            if let Some(Command::Status { what, json }) = &cli.command {
                if let Some(socket) = gateway::config::control_socket_of_file(&path) {
                    show_status(&socket, *what, *json);
                }
            }
            return ExitCode::FAILURE;
        }
    };
    match &cli.command {
        Some(Command::Cdr {
            limit,
            format,
            since,
        }) => return list_cdrs(&config, *limit, *format, since.as_deref()),
        Some(Command::Migrate) => return migrate(&config),
        Some(Command::Status { what, json }) => {
            let socket = config.status.control_socket_path(&config.database);
            return show_status(&socket, *what, *json);
        }
        Some(Command::Analog { words }) => return operate_analog(&config, words),
        None => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    match runtime.block_on(gateway::runtime::run(config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn readme_shows_the_help_as_it_is() {
        let readme = include_str!("../../README.md");
        let shown = readme
            .split("<!-- gateway --help -->\n```text\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README shows `gateway --help` after <!-- gateway --help -->");
        let help = Cli::command().render_help().to_string();
        assert_eq!(
            shown.trim_end(),
            help.trim_end(),
            "update README's copy of --help"
        );
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["gateway", "cdr", "--config", "x.toml", "--limit", "5"]);
        assert!(matches!(
            cli.command,
            Some(Command::Cdr {
                limit: Some(5),
                format: CdrFormat::Table,
                since: None
            })
        ));
        let export = Cli::parse_from(["gateway", "cdr", "--format", "csv", "--since", "24h"]);
        assert!(matches!(
            export.command,
            Some(Command::Cdr { format: CdrFormat::Csv, since: Some(s), .. }) if s == "24h"
        ));
        assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("x.toml")));
        let cli = Cli::parse_from([
            "gateway", "analog", "-c", "x.toml", "ring", "3", "555", "Jane", "Doe",
        ]);
        assert!(matches!(cli.command, Some(Command::Analog { words }) if words.len() == 5));
        let cli = Cli::parse_from(["gateway", "status", "ports", "--json", "-c", "x.toml"]);
        assert!(matches!(
            cli.command,
            Some(Command::Status {
                what: StatusWhat::Ports,
                json: true
            })
        ));
        let cli = Cli::parse_from(["gateway", "migrate", "-c", "x.toml"]);
        assert!(matches!(cli.command, Some(Command::Migrate)));
    }
}
