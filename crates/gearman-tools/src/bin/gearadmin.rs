//! `gearadmin`: runs admin commands against a job server, flag-compatible with gearmand
//! 1.1.20's tool. Output is byte for byte what the C tool prints; the exit status differs on
//! purpose: an `ERR` answer or a lost connection gives 1 (the C tool exits 0 on `ERR`).

use std::io::Write;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;
use gearman_client::{AdminClient, ClientError};

/// The option list, as boost::program_options prints it in the C tool.
const OPTIONS: &str = "\
Options:
  --help                         Options related to the program.
  -h [ --host ] arg (=localhost) Connect to the host
  -p [ --port ] arg (=4730)      Port number or service to use for connection
  --server-version               Fetch the version number for the server.
  --server-verbose               Fetch the verbose setting for the server.
  --create-function arg          Create the function from the server.
  --cancel-job arg               Remove a given job from the server's queue
  --drop-function arg            Drop the function from the server.
  --show-unique-jobs             Show unique IDs of jobs on the server.
  --show-jobs                    Show all jobs on the server.
  --getpid                       Get Process ID for the server.
  --status                       Status for the server.
  --priority-status              Queued jobs status by priority.
  --workers                      Workers for the server.
  -S [ --ssl ]                   Enable SSL connections.

";

/// Only in `--help`: where this tool deliberately differs from the C one.
const EXIT_STATUS: &str = "\
Exit status: 0 when every command succeeded; 1 on a usage error, when the server
could not be reached or closed the connection, or when any command was answered
with ERR (the C gearadmin exits 0 on ERR).
";

#[derive(Parser, Debug)]
#[command(name = "gearadmin", disable_help_flag = true, disable_version_flag = true)]
struct Args {
    #[arg(long)]
    help: bool,
    #[arg(short = 'h', long, default_value = "localhost")]
    host: String,
    #[arg(short = 'p', long, default_value = "4730")]
    port: String,
    #[arg(long)]
    server_version: bool,
    #[arg(long)]
    server_verbose: bool,
    #[arg(long)]
    create_function: Option<String>,
    #[arg(long)]
    cancel_job: Option<String>,
    #[arg(long)]
    drop_function: Option<String>,
    #[arg(long)]
    show_unique_jobs: bool,
    #[arg(long)]
    show_jobs: bool,
    #[arg(long)]
    getpid: bool,
    #[arg(long)]
    status: bool,
    #[arg(long)]
    priority_status: bool,
    #[arg(long)]
    workers: bool,
    #[arg(short = 'S', long)]
    ssl: bool,
    /// boost accepts and ignores stray words.
    #[arg(hide = true)]
    rest: Vec<String>,
}

/// One admin command: the line sent and whether the answer is a `.`-terminated list.
struct Op {
    line: String,
    list: bool,
}

impl Args {
    /// The commands in the C tool's fixed order, whatever the command line order.
    fn ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut add = |on: bool, line: String, list: bool| {
            if on {
                ops.push(Op { line, list });
            }
        };
        add(self.getpid, "getpid".into(), false);
        if let Some(f) = &self.create_function {
            add(true, format!("create function {f}"), false);
        }
        if let Some(f) = &self.drop_function {
            add(true, format!("drop function {f}"), false);
        }
        add(self.show_jobs, "show jobs".into(), true);
        add(self.show_unique_jobs, "show unique jobs".into(), true);
        if let Some(h) = &self.cancel_job {
            add(true, format!("cancel job {h}"), false);
        }
        add(self.server_verbose, "verbose".into(), false);
        add(self.server_version, "version".into(), false);
        add(self.workers, "workers".into(), true);
        add(self.priority_status, "prioritystatus".into(), true);
        add(self.status, "status".into(), true);
        ops
    }
}

fn argv0() -> String {
    std::env::args().next().unwrap_or_else(|| "gearadmin".into())
}

/// The C tool's wording for the usage errors boost reports.
fn usage_message(err: &clap::Error) -> String {
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split_whitespace().next().unwrap_or("").to_string(),
        _ => String::new(),
    };
    match err.kind() {
        ErrorKind::UnknownArgument => format!("unrecognised option '{arg}'"),
        ErrorKind::ArgumentConflict => format!("option '{arg}' cannot be specified more than once"),
        ErrorKind::InvalidValue | ErrorKind::NoEquals => {
            format!("the required argument for option '{arg}' is missing")
        }
        _ => err.kind().to_string(),
    }
}

fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Turns an `ERR` answer back into the text after `ERR ` (the client library splits it
/// into a code and a text with `+` decoded to spaces; coded texts never contain spaces).
fn err_text(code: &str, text: &str) -> String {
    match (code.is_empty(), text.is_empty()) {
        (true, _) => text.to_string(),
        (false, true) => code.to_string(),
        (false, false) => format!("{code} {}", text.replace(' ', "+")),
    }
}

async fn run(args: Args) -> ExitCode {
    let ops = args.ops();
    if ops.is_empty() {
        print_stdout(&format!("No option execution operation given.\n\n{OPTIONS}"));
        return ExitCode::FAILURE;
    }
    if args.ssl {
        eprintln!("Error: SSL connections are not supported by this gearadmin.");
        return ExitCode::FAILURE;
    }
    let connect_error = || {
        eprint!("Error: Error connecting to {}.\n\n", args.host);
        ExitCode::FAILURE
    };
    let Ok(port) = args.port.parse::<u16>() else {
        return connect_error();
    };
    let addr = if args.host.contains(':') && !args.host.starts_with('[') {
        format!("[{}]:{port}", args.host)
    } else {
        format!("{}:{port}", args.host)
    };
    let Ok(mut admin) = AdminClient::connect(&addr).await else {
        return connect_error();
    };
    let mut failed = false;
    for op in ops {
        match admin.raw(&op.line, op.list).await {
            Ok(lines) if op.list => {
                let mut text = String::new();
                for l in lines {
                    text.push_str(&l);
                    text.push('\n');
                }
                text.push_str(".\n");
                print_stdout(&text);
            }
            Ok(lines) => {
                let line = lines.into_iter().next().unwrap_or_default();
                let shown = match line.strip_prefix("OK ") {
                    Some(value) => value,
                    None => &line,
                };
                print_stdout(&format!("{shown}\n"));
            }
            Err(ClientError::Admin { code, text }) => {
                eprint!("Error: {}\r\n", err_text(&code, &text));
                failed = true;
            }
            Err(e) => {
                eprintln!("Error: Socket was shutdown while reading from {} ({e})", args.host);
                return ExitCode::FAILURE;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            print_stdout(&format!("{} : {}\n\n{OPTIONS}", argv0(), usage_message(&e)));
            return ExitCode::FAILURE;
        }
    };
    if args.help {
        print_stdout(&format!("{OPTIONS}{EXIT_STATUS}"));
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_in_the_c_tools_order() {
        let args = Args::try_parse_from([
            "gearadmin",
            "--status",
            "--workers",
            "--getpid",
            "--cancel-job",
            "H:x:1",
            "--create-function",
            "f",
        ])
        .expect("parse");
        let lines: Vec<String> = args.ops().into_iter().map(|o| o.line).collect();
        assert_eq!(lines, ["getpid", "create function f", "cancel job H:x:1", "workers", "status"]);
    }

    #[test]
    fn err_answers_are_rebuilt() {
        assert_eq!(err_text("UNKNOWN_JOB", ""), "UNKNOWN_JOB");
        assert_eq!(err_text("", "function not found"), "function not found");
        assert_eq!(err_text("INVALID_ARGUMENTS", "An incomplete set"), "INVALID_ARGUMENTS An+incomplete+set");
    }

    #[test]
    fn usage_errors_use_boost_wording() {
        let e = Args::try_parse_from(["gearadmin", "--bogus"]).expect_err("unknown option");
        assert_eq!(usage_message(&e), "unrecognised option '--bogus'");
        let e = Args::try_parse_from(["gearadmin", "--status", "--status"]).expect_err("twice");
        assert_eq!(usage_message(&e), "option '--status' cannot be specified more than once");
        let e = Args::try_parse_from(["gearadmin", "--cancel-job"]).expect_err("no value");
        assert_eq!(usage_message(&e), "the required argument for option '--cancel-job' is missing");
    }
}
