//! Runs the `gearmand` binary for the command-line behaviour of gearmand 1.1.20
//! (tests/gearmand.cc of gearmand: the `--check-args` matrix, errors, help, version).

use std::process::{Command, Output};

fn gearmand(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gearmand"))
        .args(args)
        .env_remove("GEARMAND_PORT")
        .output()
        .expect("run gearmand")
}

fn check_args_ok(args: &[&str]) {
    let mut all = vec!["--check-args", "--config-file", ""];
    all.extend_from_slice(args);
    let out = gearmand(&all);
    assert_eq!(out.status.code(), Some(0), "{all:?}: stderr {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "{all:?}");
    assert!(out.stderr.is_empty(), "{all:?}");
}

fn fails_with(args: &[&str], message: &str) {
    let out = gearmand(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("gearmand: {message}\n"), "{args:?}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

#[test]
fn check_args_matrix() {
    let cases: &[&[&str]] = &[
        &[],
        &["--backlog=10"],
        &["-b", "10"],
        &["--daemon"],
        &["-d"],
        &["--exceptions"],
        &["--file-descriptors=100"],
        &["-f", "100"],
        &["--help"],
        &["-h"],
        &["--job-retries=6"],
        &["-j", "6"],
        &["--job-handle-prefix=foo"],
        &["--hashtable-buckets=2000"],
        &["--keepalive"],
        &["--keepalive-idle=100"],
        &["--keepalive-interval=100"],
        &["--keepalive-count=100"],
        &["--keepalive", "--keepalive-idle=10", "--keepalive-interval=10", "--keepalive-count=10"],
        &["--log-file=/nonexistent/dir/gearmand.log"],
        &["-l", "stderr"],
        &["--listen=10.0.2.1"],
        &["-L", "10.0.2.1"],
        &["--pid-file=/nonexistent/dir/gearmand.pid"],
        &["-P", "/tmp/gearmand.pid"],
        &["--protocol=http"],
        &["-r", "http"],
        &["--round-robin"],
        &["-R"],
        &["--queue-type=builtin"],
        &["-q", "libsqlite3", "--libsqlite3-db=/tmp/never-created.db"],
        &["--syslog"],
        &["--coredump"],
        &["--threads=10"],
        &["-t", "0"],
        &["--user=nobody"],
        &["-u", "nobody"],
        &["--verbose=DEBUG"],
        &["--version"],
        &["-V"],
        &["--worker-wakeup=4"],
        &["-w", "4"],
        &["--http-port=8090"],
        &["--port=8080"],
        &["-p", "8080"],
        &["--ssl", "--ssl-ca-file=a", "--ssl-certificate=b", "--ssl-key=c"],
        &["--store-queue-on-shutdown", "--libsqlite3-table=t"],
        &["--libpq-conninfo=x", "--libpq-table=t"],
        &["--mysql-host=h", "--mysql-port=3306", "--mysql-user=u"],
        &["--mysql-password=p", "--mysql-db=d", "--mysql-table=t"],
        &["--redis-server=h", "--redis-port=1", "--redis-password=p", "--redis-prefix=x"],
        &["--libmemcached-servers=a", "--libmemcached-prefix=x"],
        &["--max-packet-size=1048576"],
        &["-q", "foo"],
        &["-r", "foo"],
    ];
    for args in cases {
        check_args_ok(args);
    }
    assert!(!std::path::Path::new("/tmp/never-created.db").exists());
}

#[test]
fn errors() {
    fails_with(&["--check-args", "--verbose=BAD"], "Invalid value for --verbose supplied");
    fails_with(
        &["--check-args", "--config-file"],
        "the required argument for option '--config-file' is missing",
    );
    fails_with(
        &["--check-args", "--config-file=/nonexistent/gearmand.conf"],
        "Could not open configuration file.",
    );
    fails_with(&["--check-args", "-vvv"], "unrecognised option '-vvv'");
    fails_with(&["foo"], "unrecognised option 'foo'");
    fails_with(&["--bogus"], "unrecognised option '--bogus'");
    fails_with(
        &["--http-port="],
        "the argument for option '--http-port' should follow immediately after the equal sign",
    );
    fails_with(&["--check-args", "--hashtable-buckets=0"], "hashtable-buckets has to be greater than 0");
    fails_with(&["-t", "abc"], "the argument ('abc') for option '--threads' is invalid");
    fails_with(&["-p", "1", "-p", "2"], "option '--port' cannot be specified more than once");
}

#[test]
fn unknown_modules_fail_at_startup() {
    let base = ["--config-file", "", "-l", "none", "-L", "127.0.0.1", "-p", "0"];
    let mut args = base.to_vec();
    args.extend(["-q", "foo"]);
    fails_with(&args, "Error while initializing the queue : foo");
    let mut args = base.to_vec();
    args.extend(["-r", "foo"]);
    fails_with(&args, "Unknown protocol module : foo");
}

#[test]
fn help_and_version() {
    let out = gearmand(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.starts_with("Allowed options:\n"));
    for word in ["--port", "--verbose", "--libsqlite3-db", "--max-packet-size", "HTTP:", "Gear:"] {
        assert!(help.contains(word), "{word}");
    }
    let out = gearmand(&["-V"]);
    assert_eq!(out.status.code(), Some(0));
    let version = String::from_utf8(out.stdout).unwrap();
    assert!(version.starts_with("\ngearmand "), "{version:?}");
    assert!(version.contains("1.1.20"), "{version:?}");
}
