//! gearmand-style logging on top of `tracing`.
//!
//! Lines look like gearmand's (SERVER.md §8):
//! `   INFO 2026-11-28 01:59:01.874643 [  main ] Accepted connection from ...`:
//! level right-aligned in 7 characters, local time with microseconds, a
//! thread tag right-aligned in 6 characters, then the message (other event
//! fields follow as `key=value`). gearmand's ` -> file:line` suffix is not written.
//!
//! Levels: a tracing event is given a gearmand level from its tracing level
//! (ERROR -> ERROR, WARN -> WARNING, INFO -> INFO, DEBUG -> DEBUG; TRACE is
//! never written), unless its target is one of [`FATAL_TARGET`],
//! [`ALERT_TARGET`], [`CRITICAL_TARGET`] or [`NOTICE_TARGET`], which select
//! that level exactly, e.g. `tracing::info!(target: NOTICE_TARGET, "...")`.
//! An event is written when its level is at or above `--verbose`, so all
//! eight gearmand levels filter as in gearmand (the coarse mapping of
//! `--verbose` to a tracing level is [`Verbose::tracing_level`]).
//!
//! Thread tags: the main thread is `main`; a thread whose name has at most 6
//! characters shows that name (e.g. `proc`); other threads get a number (1, 2, ...)
//! in the order they first log.

use std::cell::OnceCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::{strerror, Config, Verbose};

/// Target that logs an event at gearmand's FATAL level (use with `error!`).
pub const FATAL_TARGET: &str = "gearmand::fatal";
/// Target that logs an event at gearmand's ALERT level (use with `error!`).
pub const ALERT_TARGET: &str = "gearmand::alert";
/// Target that logs an event at gearmand's CRITICAL level (use with `error!`).
pub const CRITICAL_TARGET: &str = "gearmand::critical";
/// Target that logs an event at gearmand's NOTICE level (use with `info!`).
pub const NOTICE_TARGET: &str = "gearmand::notice";

/// Line written into the old file when the log is reopened (SIGHUP).
const SIGHUP_LINE: &[u8] = b" NOTICE SIGHUP, reopening log file\n";

/// Where log lines go, from `-l/--log-file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    /// `-l none`: nothing is written.
    None,
    /// `-l stderr`.
    Stderr,
    /// A file, opened for appending.
    File(PathBuf),
}

impl LogDestination {
    /// Interprets a `--log-file` value (`stderr` and `none` are special).
    pub fn from_log_file(value: &str) -> LogDestination {
        match value {
            "none" => LogDestination::None,
            "stderr" => LogDestination::Stderr,
            path => LogDestination::File(PathBuf::from(path)),
        }
    }
}

enum Sink {
    None,
    Stderr,
    File(File),
}

struct Shared {
    path: Option<PathBuf>,
    sink: Mutex<Sink>,
    verbose: Verbose,
}

/// Handle on an open log: reopen it on SIGHUP, query its state.
#[derive(Clone)]
pub struct LogHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("path", &self.shared.path)
            .field("verbose", &self.shared.verbose)
            .finish()
    }
}

impl LogHandle {
    /// Opens the destination of `config` without installing anything.
    /// A file that cannot be opened prints gearmand's warning on stderr
    /// and falls back to stderr.
    pub fn open(config: &Config) -> LogHandle {
        let dest = LogDestination::from_log_file(&config.log_file);
        let (sink, path) = match dest {
            LogDestination::None => (Sink::None, None),
            LogDestination::Stderr => (Sink::Stderr, None),
            LogDestination::File(path) => match open_append(&path) {
                Ok(f) => (Sink::File(f), Some(path)),
                Err(e) => {
                    let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
                    eprintln!(
                        "gearmand: Could not open log file \"{}\", from \"{cwd}\", switching to stderr. ({})",
                        path.display(),
                        strerror(&e)
                    );
                    (Sink::Stderr, Some(path))
                }
            },
        };
        LogHandle { shared: Arc::new(Shared { path, sink: Mutex::new(sink), verbose: config.verbose }) }
    }

    /// SIGHUP: writes ` NOTICE SIGHUP, reopening log file` into the current
    /// file, then opens the path again. If that fails the old file stays in use.
    /// Does nothing for `stderr` and `none`.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.shared.path else {
            return Ok(());
        };
        let mut sink = self.shared.sink.lock();
        if let Sink::File(f) = &mut *sink {
            let _ = f.write_all(SIGHUP_LINE);
        }
        let new = open_append(path)?;
        *sink = Sink::File(new);
        Ok(())
    }

    /// The log file path (`None` for `stderr` and `none`).
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }

    /// The `--verbose` level in force.
    pub fn verbose(&self) -> Verbose {
        self.shared.verbose
    }

    /// Builds a subscriber writing to this log, without installing it
    /// (for `tracing::subscriber::with_default` in tests, or a custom setup).
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync + 'static {
        build_subscriber(Source::Fixed(self.shared.clone()))
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Where the writer and filter find the current log.
#[derive(Clone)]
enum Source {
    Fixed(Arc<Shared>),
    Global,
}

impl Source {
    fn get(&self) -> Option<Arc<Shared>> {
        match self {
            Source::Fixed(s) => Some(s.clone()),
            Source::Global => global().read().clone(),
        }
    }
}

fn global() -> &'static RwLock<Option<Arc<Shared>>> {
    static CURRENT: OnceLock<RwLock<Option<Arc<Shared>>>> = OnceLock::new();
    CURRENT.get_or_init(|| RwLock::new(None))
}

/// Opens the log of `config` and makes it the process-wide tracing output.
/// The first call installs the global subscriber; later calls (tests, a new
/// configuration) redirect that subscriber to the new log. Fails only if a
/// different global subscriber was installed by someone else.
pub fn init(config: &Config) -> anyhow::Result<LogHandle> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let handle = LogHandle::open(config);
    *global().write() = Some(handle.shared.clone());
    let installed = INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(build_subscriber(Source::Global)).map_err(|e| e.to_string())
    });
    if let Err(e) = installed {
        anyhow::bail!("cannot install the gearmand logger: {e}");
    }
    Ok(handle)
}

fn build_subscriber(source: Source) -> impl Subscriber + Send + Sync + 'static {
    let filter_source = source.clone();
    let filter = tracing_subscriber::filter::filter_fn(move |meta: &Metadata<'_>| {
        if !meta.is_event() {
            return false;
        }
        let Some(level) = gearmand_level(meta) else {
            return false;
        };
        match filter_source.get() {
            Some(shared) => level <= shared.verbose && !matches!(*shared.sink.lock(), Sink::None),
            None => false,
        }
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(GearmandFormat)
        .with_writer(SinkMakeWriter { source })
        .with_filter(filter);
    tracing_subscriber::registry().with(layer)
}

/// gearmand level of an event: from its special target, else its tracing level.
fn gearmand_level(meta: &Metadata<'_>) -> Option<Verbose> {
    match meta.target() {
        FATAL_TARGET => return Some(Verbose::Fatal),
        ALERT_TARGET => return Some(Verbose::Alert),
        CRITICAL_TARGET => return Some(Verbose::Critical),
        NOTICE_TARGET => return Some(Verbose::Notice),
        _ => {}
    }
    match *meta.level() {
        Level::ERROR => Some(Verbose::Error),
        Level::WARN => Some(Verbose::Warning),
        Level::INFO => Some(Verbose::Info),
        Level::DEBUG => Some(Verbose::Debug),
        Level::TRACE => None,
    }
}

/// Formats one event as a gearmand log line.
struct GearmandFormat;

impl<S, N> FormatEvent<S, N> for GearmandFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let level = gearmand_level(event.metadata()).unwrap_or(Verbose::Debug);
        let now = chrono::Local::now();
        write!(
            writer,
            "{:>7} {} [ {:>6} ] ",
            level.as_str(),
            now.format("%Y-%m-%d %H:%M:%S%.6f"),
            thread_tag()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn thread_tag() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    thread_local! {
        static TAG: OnceCell<String> = const { OnceCell::new() };
    }
    TAG.with(|tag| {
        tag.get_or_init(|| match std::thread::current().name() {
            Some(name) if name.chars().count() <= 6 => name.to_string(),
            _ => NEXT.fetch_add(1, Ordering::Relaxed).to_string(),
        })
        .clone()
    })
}

struct SinkMakeWriter {
    source: Source,
}

impl<'a> MakeWriter<'a> for SinkMakeWriter {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter { shared: self.source.get() }
    }
}

/// Writes one formatted line to the current sink.
struct SinkWriter {
    shared: Option<Arc<Shared>>,
}

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match &mut *shared.sink.lock() {
            Sink::None => Ok(()),
            Sink::Stderr => io::stderr().lock().write_all(buf),
            Sink::File(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("gearman-rs-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn config(log: &Path, verbose: Verbose) -> Config {
        Config { log_file: log.display().to_string(), verbose, ..Config::default() }
    }

    /// Checks `<LEVEL:7> YYYY-MM-DD HH:MM:SS.uuuuuu [ tag:6 ] message`.
    fn check_line(line: &str, level: &str, tag: &str, message: &str) {
        let prefix = format!("{level:>7} ");
        let rest = line.strip_prefix(&prefix).unwrap_or_else(|| panic!("{line:?}"));
        let b = &rest.as_bytes()[..26];
        for (i, c) in b.iter().enumerate() {
            match i {
                4 | 7 => assert_eq!(*c, b'-', "{line:?}"),
                10 => assert_eq!(*c, b' ', "{line:?}"),
                13 | 16 => assert_eq!(*c, b':', "{line:?}"),
                19 => assert_eq!(*c, b'.', "{line:?}"),
                _ => assert!(c.is_ascii_digit(), "{line:?}"),
            }
        }
        assert_eq!(&rest[26..], format!(" [ {tag:>6} ] {message}"), "{line:?}");
    }

    #[test]
    fn line_format_levels_and_filter() {
        let path = temp_path("format");
        let handle = LogHandle::open(&config(&path, Verbose::Notice));
        assert_eq!(handle.path(), Some(path.as_path()));
        tracing::subscriber::with_default(handle.subscriber(), || {
            tracing::error!(target: FATAL_TARGET, "fatal one");
            tracing::error!(target: CRITICAL_TARGET, "critical one");
            tracing::error!("error one");
            tracing::warn!("warning one");
            tracing::info!(target: NOTICE_TARGET, "accepted,f,u,0");
            tracing::info!("info is filtered out");
            tracing::debug!("debug is filtered out");
            tracing::trace!("trace is never written");
            tracing::warn!(peer = "1.2.3.4:5", "with a field");
        });
        let std_thread = std::thread::Builder::new()
            .name("proc".into())
            .spawn({
                let sub = handle.subscriber();
                move || tracing::subscriber::with_default(sub, || tracing::error!("from proc"))
            })
            .unwrap();
        std_thread.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        let tag = match std::thread::current().name() {
            Some(n) if n.len() <= 6 => n.to_string(),
            _ => lines[0][37..43].trim().to_string(),
        };
        check_line(lines[0], "FATAL", &tag, "fatal one");
        check_line(lines[1], "CRITICAL", &tag, "critical one");
        check_line(lines[2], "ERROR", &tag, "error one");
        check_line(lines[3], "WARNING", &tag, "warning one");
        check_line(lines[4], "NOTICE", &tag, "accepted,f,u,0");
        check_line(lines[5], "WARNING", &tag, "with a field peer=\"1.2.3.4:5\"");
        check_line(lines[6], "ERROR", "proc", "from proc");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn debug_level_writes_everything_but_trace() {
        let path = temp_path("debug");
        let handle = LogHandle::open(&config(&path, Verbose::Debug));
        tracing::subscriber::with_default(handle.subscriber(), || {
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!("t");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().next().unwrap().starts_with("   INFO "));
        assert!(text.lines().nth(1).unwrap().starts_with("  DEBUG "));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn reopen_writes_notice_then_uses_new_file() {
        let path = temp_path("reopen");
        let rotated = temp_path("reopen.1");
        let handle = LogHandle::open(&config(&path, Verbose::Error));
        tracing::subscriber::with_default(handle.subscriber(), || {
            tracing::error!("before");
            std::fs::rename(&path, &rotated).unwrap();
            handle.reopen().unwrap();
            tracing::error!("after");
        });
        let old = std::fs::read_to_string(&rotated).unwrap();
        let old: Vec<&str> = old.lines().collect();
        assert_eq!(old.len(), 2);
        assert!(old[0].ends_with("] before"));
        assert_eq!(old[1], " NOTICE SIGHUP, reopening log file");
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(new.lines().count(), 1);
        assert!(new.ends_with("] after\n"));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&rotated);
    }

    #[test]
    fn destinations() {
        assert_eq!(LogDestination::from_log_file("none"), LogDestination::None);
        assert_eq!(LogDestination::from_log_file("stderr"), LogDestination::Stderr);
        assert_eq!(LogDestination::from_log_file("/x/y"), LogDestination::File(PathBuf::from("/x/y")));
        let none = LogHandle::open(&Config { log_file: "none".into(), ..Config::default() });
        assert_eq!(none.path(), None);
        none.reopen().unwrap();
        tracing::subscriber::with_default(none.subscriber(), || tracing::error!("dropped"));
        // An unopenable file falls back to stderr but remembers the path.
        let bad = LogHandle::open(&Config {
            log_file: "/nonexistent/dir/gearmand.log".into(),
            ..Config::default()
        });
        assert_eq!(bad.path(), Some(Path::new("/nonexistent/dir/gearmand.log")));
        assert!(matches!(*bad.shared.sink.lock(), Sink::Stderr));
        assert!(bad.reopen().is_err());
    }

    #[test]
    fn init_twice_redirects_the_global_logger() {
        let first = temp_path("init1");
        let second = temp_path("init2");
        let h1 = init(&config(&first, Verbose::Error)).unwrap();
        tracing::error!("to first");
        let h2 = init(&config(&second, Verbose::Warning)).unwrap();
        tracing::warn!("to second");
        assert_eq!(h1.path(), Some(first.as_path()));
        assert_eq!(h2.verbose(), Verbose::Warning);
        let a = std::fs::read_to_string(&first).unwrap();
        let b = std::fs::read_to_string(&second).unwrap();
        assert!(a.contains("] to first\n") && !a.contains("to second"), "{a}");
        assert!(b.contains("WARNING") && b.contains("] to second\n"), "{b}");
        let _ = std::fs::remove_file(&first);
        let _ = std::fs::remove_file(&second);
    }
}
