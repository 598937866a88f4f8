//! An epoch's checkpoint files become current together, or not at all.
//!
//! A kill between writing `last.bpk` and `state.json` would otherwise leave
//! weights of epoch N+1 beside a state of epoch N, and `--resume` would train
//! epoch N+1 twice. So each file of an epoch is first written under a pending
//! name stamped with the epoch, `state.json` is then written as the commit, and
//! only then are the pending files renamed into place. [`settle`] finishes or
//! discards whatever a kill left, from what `state.json` says.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// The pending name of `name` (e.g. `last.bpk`) for `epoch`: hidden, so nothing
/// that reads a run mistakes it for the current checkpoint.
pub fn pending_path(run_dir: &Path, epoch: usize, name: &str) -> PathBuf {
    run_dir.join(format!(".epoch-{epoch}.{name}"))
}

/// The epoch and final name of a pending file, if `file_name` is one.
fn parse_pending(file_name: &str) -> Option<(usize, &str)> {
    let rest = file_name.strip_prefix(".epoch-")?;
    let (epoch, name) = rest.split_once('.')?;
    Some((epoch.parse().ok()?, name))
}

/// Renames the committed `epoch`'s pending files to their final names.
pub fn promote(run_dir: &Path, epoch: usize) -> Result<()> {
    settle(run_dir, Some(epoch))
}

/// After a kill: promotes the pending files of the committed epoch (the one
/// `state.json` records; `None` when it does not exist yet) and removes any
/// other pending files, which belong to an epoch that never committed.
pub fn settle(run_dir: &Path, committed: Option<usize>) -> Result<()> {
    let entries = std::fs::read_dir(run_dir).at(run_dir)?;
    for entry in entries {
        let entry = entry.at(run_dir)?;
        let file_name = entry.file_name();
        let Some((epoch, name)) = file_name.to_str().and_then(parse_pending) else {
            continue;
        };
        let path = entry.path();
        if Some(epoch) == committed {
            let target = run_dir.join(name);
            std::fs::rename(&path, &target).at(&target)?;
        } else {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn committed_epoch_is_promoted_and_uncommitted_ones_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("last.bpk"), b"epoch 2").unwrap();
        std::fs::write(pending_path(d, 3, "last.bpk"), b"epoch 3").unwrap();
        std::fs::write(pending_path(d, 3, "best.bpk"), b"epoch 3").unwrap();
        std::fs::write(pending_path(d, 4, "last.bpk"), b"epoch 4").unwrap();
        settle(d, Some(3)).unwrap();
        assert_eq!(names(d), ["best.bpk", "last.bpk"]);
        assert_eq!(std::fs::read(d.join("last.bpk")).unwrap(), b"epoch 3");
        // Nothing committed: every pending file goes.
        std::fs::write(pending_path(d, 1, "last-optim.bpk"), b"x").unwrap();
        settle(d, None).unwrap();
        assert_eq!(names(d), ["best.bpk", "last.bpk"]);
    }

    #[test]
    fn only_pending_names_are_touched() {
        assert_eq!(
            parse_pending(".epoch-12.last-optim.bpk"),
            Some((12, "last-optim.bpk"))
        );
        assert_eq!(parse_pending(".epoch-x.last.bpk"), None);
        assert_eq!(parse_pending("last.bpk"), None);
        assert_eq!(parse_pending(".last.bpk.tmp"), None);
    }
}
