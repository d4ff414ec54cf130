//! Helpers shared by the backend tests.

#![allow(dead_code)]

use std::fmt::Display;
use std::time::{SystemTime, UNIX_EPOCH};

/// A name suffix no other test run uses.
pub(crate) fn suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}_{nanos}", std::process::id())
}

/// A service is missing: skip the test, unless GEARMAN_REQUIRE_SERVICES=1 says it must be there.
pub(crate) fn skip(service: &str, why: impl Display) {
    if std::env::var("GEARMAN_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{service} is required (GEARMAN_REQUIRE_SERVICES=1) but not available: {why}");
    }
    println!("SKIP: {service} not available: {why}");
}
