//! Wiring only: command line, configuration, tables, and the tasks on one `LocalExecutor`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_executor::{LocalExecutor, StaticLocalExecutor};
use async_io::Timer;
use futures_lite::{StreamExt, future};

use muc_eventsource::config::{self, Config};
use muc_eventsource::http::server::{self, Server};
use muc_eventsource::http::sse;
use muc_eventsource::rooms::flusher;
use muc_eventsource::rooms::table::{Origin, RoomTable};
use muc_eventsource::settings::Settings;
use muc_eventsource::shutdown::Shutdown;
use muc_eventsource::xmpp::component::{self, Fatal};
use muc_eventsource::{logger, notify};

const DEFAULT_CONFIG: &str = "/etc/muc-eventsource/muc-eventsource.conf";
/// How long subscribers get to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

const USAGE: &str = "\
muc-eventsource: Prosody MUC rooms as HTML5 EventSource (Server-Sent Events) streams

usage: muc-eventsource [--config FILE] [--log-level LEVEL] [--check-config]

  --config FILE      configuration file (default /etc/muc-eventsource/muc-eventsource.conf)
  --log-level LEVEL  error, warn, info, debug or trace (overrides log_level in the file)
  --check-config     validate the file, print the effective settings and the memory ceiling
  --help, --version

The configuration keys are listed in the README and by --check-config.
";

struct Args {
    config: String,
    log_level: Option<log::LevelFilter>,
    check: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: DEFAULT_CONFIG.into(),
        log_level: None,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value; see --help"))
        };
        match flag.as_str() {
            "--config" | "-c" => args.config = value("--config")?,
            "--log-level" => {
                let v = value("--log-level")?;
                args.log_level = Some(config::parse_level(&v).ok_or_else(|| {
                    format!("--log-level: expected error, warn, info, debug or trace, found `{v}`")
                })?);
            }
            "--check-config" => args.check = true,
            "--help" | "-h" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--version" | "-V" => {
                println!("muc-eventsource {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(format!("unknown argument `{other}`; see --help")),
        }
    }
    Ok(Some(args))
}

fn load(args: &Args) -> Result<Config, String> {
    let text = std::fs::read_to_string(&args.config).map_err(|e| {
        format!(
            "cannot read the configuration file {}: {e}; pass --config FILE",
            args.config
        )
    })?;
    let mut config = config::parse(&args.config, &text).map_err(|e| e.to_string())?;
    if let Some(level) = args.log_level {
        config.log_level = level;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("muc-eventsource: {e}");
            return ExitCode::from(1);
        }
    };
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("muc-eventsource: {e}");
            return ExitCode::from(1);
        }
    };
    if args.check {
        print!(
            "{}{}",
            config.describe(),
            muc_eventsource::memory::describe(&config)
        );
        return ExitCode::SUCCESS;
    }
    logger::init(config.log_level);
    match run(&args.config, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

/// Builds the tables and runs every task on this thread until shutdown. `Err` is the exit code.
fn run(path: &str, config: Config) -> Result<(), u8> {
    // Everything below lives as long as the process; leaking makes it `'static` for the tasks.
    let settings: &'static Settings = Box::leak(Box::new(Settings::new(path, config.clone())));
    let config: &'static Config = Box::leak(Box::new(config));
    let table: &'static RoomTable = Box::leak(Box::new(tables(config)));
    let shutdown: &'static Shutdown = Box::leak(Box::default());
    let listener = server::bind(config.listen).map_err(|e| {
        log::error!(
            "cannot listen on {}: {e}; is another process using it? set `listen` in the config",
            config.listen
        );
        1
    })?;
    let signals = async_signal::Signals::new([
        async_signal::Signal::Term,
        async_signal::Signal::Int,
        async_signal::Signal::Hup,
    ])
    .map_err(|e| {
        log::error!("cannot install signal handlers: {e}");
        1
    })?;
    log::info!(
        "muc-eventsource {} serving http://{}/eventsource/<room> for {} on {}; memory ceiling {} KiB",
        env!("CARGO_PKG_VERSION"),
        config.listen,
        config.rooms.join(", "),
        config.muc,
        muc_eventsource::memory::ceiling(config).total() / 1024
    );
    let executor: &'static StaticLocalExecutor = LocalExecutor::new().leak();
    let server: &'static Server =
        Box::leak(Box::new(Server::new(config, settings, table, shutdown)));
    executor
        .spawn(server::serve(server, listener, executor))
        .detach();
    executor
        .spawn(on_signals(signals, settings, table, shutdown))
        .detach();
    spawn_timers(executor, config, settings, table);
    let result = future::block_on(executor.run(link_then_drain(settings, table, shutdown)));
    match result {
        Ok(()) => {
            log::info!("stopped");
            Ok(())
        }
        Err(Fatal::AuthRejected) => Err(2),
    }
}

/// The room table, holding the configured rooms.
fn tables(config: &Config) -> RoomTable {
    let table = RoomTable::new(config.sizes());
    for room in &config.rooms {
        table
            .add(room, &config.muc, Origin::Configured)
            .expect("max_rooms >= rooms is validated");
    }
    table.set_room_cap(config.max_subscribers_per_room);
    table
}

/// SIGHUP reloads the configuration; SIGTERM or SIGINT start the shutdown.
async fn on_signals(
    mut signals: async_signal::Signals,
    settings: &'static Settings,
    table: &'static RoomTable,
    shutdown: &'static Shutdown,
) {
    while let Some(Ok(signal)) = signals.next().await {
        if signal == async_signal::Signal::Hup {
            notify::status("reloading the configuration");
            match settings.reload(table) {
                Ok(()) => notify::status("configuration reloaded"),
                Err(e) => log::error!("reload failed, nothing changed: {e}"),
            }
            continue;
        }
        log::info!("{signal:?} received: shutting down");
        notify::stopping();
        shutdown.request();
        break;
    }
}

/// The periodic tasks: heartbeats, the delayed and continued fan-out passes, the watchdog.
fn spawn_timers(
    executor: &'static StaticLocalExecutor,
    config: &'static Config,
    settings: &'static Settings,
    table: &'static RoomTable,
) {
    // Always running: `heartbeat_secs` is read again before each beat, so a reload applies it.
    executor
        .spawn(sse::heartbeat(table, || settings.get().heartbeat))
        .detach();
    if !config.fanout_delay.is_zero() {
        executor
            .spawn(flusher::delayed(table, config.fanout_delay))
            .detach();
    }
    executor.spawn(flusher::continue_passes(table)).detach();
    if let Some(every) = notify::watchdog_interval() {
        executor
            .spawn(async move {
                let mut timer = Timer::interval(every / 2);
                loop {
                    timer.next().await;
                    notify::watchdog();
                }
            })
            .detach();
    }
}

/// Runs the component link until it ends (shutdown, or a fatal error), then closes every
/// stream and gives subscribers [`SHUTDOWN_GRACE`] to finish.
async fn link_then_drain(
    settings: &'static Settings,
    table: &'static RoomTable,
    shutdown: &'static Shutdown,
) -> Result<(), Fatal> {
    let result = component::run(settings, table, shutdown).await;
    shutdown.request();
    table.close_all();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while table.subscriber_count() > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(10)).await;
    }
    result
}
