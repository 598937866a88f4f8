//! Crash injection for the kill-and-resume tests: with
//! `HISTOSHARD_FAILPOINT=NAME` (or `NAME:N`, the N-th time it is reached) the
//! process aborts at that point as abruptly as a `kill -9` — no destructors,
//! no cleanup. Unset, a failpoint is a single environment lookup.

/// Aborts if `HISTOSHARD_FAILPOINT` names this point and `hit` (1-based) matches.
pub fn reached(name: &str, hit: usize) {
    let Ok(spec) = std::env::var("HISTOSHARD_FAILPOINT") else {
        return;
    };
    let (point, n) = match spec.split_once(':') {
        Some((p, n)) => (p, n.parse().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    if point == name && n == hit {
        eprintln!("failpoint {spec}: aborting");
        std::process::abort();
    }
}
